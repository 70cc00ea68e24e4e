"""AlexNet Studio in the browser: ``python gradio_app.py`` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT apply).

The layout lives in ``build_app`` and one small ``_<name>_tab`` function per tab; the handlers are plain
module-level functions that call alexnet_core, so tests and the API can call them directly.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

from alexnet_core import data as studio_data
from alexnet_core.devices import available_devices
from alexnet_core.models import MODELS, get_spec
from alexnet_core.plots import shape_plot
from alexnet_core.runner import RUNNER, BusyError
from alexnet_core.summary import TABLE_COLUMNS, SizeError, summarize, table_rows
from alexnet_core.train import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig
from alexnet_core.uploads import UploadError, extract_zip

REPO = Path(__file__).resolve().parent
# The data sets that sit beside the repo on the development machines (see ../shared/data/README.md).
SHARED_DATA = REPO.parent / "shared" / "data"
# Everything the app writes (downloads, decoded caches, uploads, training runs) goes under one folder.
STUDIO_HOME = studio_data.default_home()
RUNS_DIR = STUDIO_HOME / "runs"
UPLOADS_DIR = STUDIO_HOME / "uploads"

# The two sizes every variant is compared at: ImageNet's (as the paper states it) and CIFAR-10's.
COMPARED_SIZES = (224, 32)
# Rows that never change a shape; hiding them keeps two tables readable side by side.
HIDDEN_TYPES = ("ReLU", "Dropout")
# Opens on torchvision's net so that the first view has a table (the paper's net fits neither 224 nor 32),
# with the custom size at the paper's 227.
DEFAULT_MODEL = "alexnet_torchvision"
DEFAULT_CUSTOM_SIZE = 227


# --- Architecture tab -----------------------------------------------------------------------------------


def _variant_text(model: str) -> str:
    spec = get_spec(model)
    return (
        f"### {spec.title}\n\n"
        f"**Input** {spec.in_channels}×{spec.input_size}×{spec.input_size} · "
        f"**classes** {spec.num_classes}\n\n"
        f"**Source:** {spec.source}\n\n{spec.notes}"
    )


def _size_result(model: str, size: int, batch_norm: bool) -> tuple[str, gr.Dataframe]:
    """A heading with the totals and the table, or the sentence that says why the size does not fit."""
    try:
        summary = summarize(model, size, batch_norm=batch_norm)
    except SizeError as error:
        return f"#### {size}×{size}\n\n⚠️ {error}", gr.Dataframe(value=None, visible=False)
    heading = (f"#### {size}×{size}\n\n{summary.total_params:,} parameters · "
               f"{summary.total_macs:,} MACs")
    rows = table_rows(summary, skip_types=HIDDEN_TYPES)
    return heading, gr.Dataframe(value=rows, headers=TABLE_COLUMNS, visible=True)


def architecture(model: str, custom_size: float | None, batch_norm: bool
                 ) -> tuple[str, str, gr.Dataframe, str, gr.Dataframe, str, Figure]:
    """Everything the Architecture tab shows: the variant's text, the 224 and 32 tables, the totals
    at the custom size (or why it does not fit), and the shape plot."""
    spec = get_spec(model)
    outputs: list = [_variant_text(model)]
    for size in COMPARED_SIZES:
        outputs.extend(_size_result(model, size, batch_norm))

    size = spec.input_size if custom_size is None else custom_size
    try:
        summary = summarize(model, size, batch_norm=batch_norm)
        custom = (f"#### Custom size {summary.input_shape[2]}×{summary.input_shape[3]}\n\n"
                  f"{summary.total_params:,} parameters · {summary.total_macs:,} MACs · "
                  f"{summary.total_flops:,} FLOPs")
    except SizeError as error:
        # Still draw something useful: the variant at its own size.
        summary = summarize(model, spec.input_size, batch_norm=batch_norm)
        custom = f"#### Custom size\n\n⚠️ {error} The plot shows {spec.input_size}×{spec.input_size}."
    outputs += [custom, shape_plot(summary)]
    return tuple(outputs)


def _architecture_tab(app: gr.Blocks) -> None:
    with gr.Tab("Architecture"):
        with gr.Row():
            model = gr.Dropdown(
                choices=[(f"{name} — {spec.title}", name) for name, spec in MODELS.items()],
                value=DEFAULT_MODEL, label="Model", scale=3,
            )
            batch_norm = gr.Checkbox(label="BatchNorm", value=False, scale=1)
            custom_size = gr.Number(value=DEFAULT_CUSTOM_SIZE, label="Custom size",
                                    precision=0, minimum=1, maximum=1024, scale=1)
        variant_text = gr.Markdown(label="Variant")
        with gr.Row(equal_height=False):
            tables = []
            for size in COMPARED_SIZES:
                with gr.Column():
                    tables += [
                        gr.Markdown(label=f"Totals at {size}"),
                        gr.Dataframe(headers=TABLE_COLUMNS, label=f"Layers at {size}", interactive=False,
                                     wrap=True),
                    ]
        custom_totals = gr.Markdown(label="Custom size totals")
        plot = gr.Plot(label="Shapes layer by layer")

    gr.on(
        triggers=[app.load, model.change, custom_size.change, batch_norm.change],
        fn=architecture,
        inputs=[model, custom_size, batch_norm],
        outputs=[variant_text, *tables, custom_totals, plot],
        api_name="summary",
    )


# --- Train tab ------------------------------------------------------------------------------------------

BUILTIN_DATA = [("CIFAR-10 (downloaded on first use)", "cifar10"),
                ("Fashion-MNIST (downloaded on first use)", "fashion-mnist"),
                ("Flowers, 5 classes (downloaded on first use)", "flowers")]
# The Train tab's hyper-parameter fields, in the order the handlers take them.
HYPER_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                "label_smoothing", "batch_norm")


def data_choices() -> list[tuple[str, str]]:
    """Built-in sources, the shared folders where present, and every zip uploaded so far."""
    choices = list(BUILTIN_DATA)
    for name in ("cifar10", "flowers5"):
        if (SHARED_DATA / name).is_dir():
            choices.append((f"Shared folder: {name}", str(SHARED_DATA / name)))
    if UPLOADS_DIR.is_dir():
        for folder in sorted(UPLOADS_DIR.iterdir()):
            root = next((p for p in [folder, *folder.iterdir()] if (p / "train").is_dir()), folder) \
                if folder.is_dir() else None
            if root is not None:
                choices.append((f"Uploaded: {folder.name}", str(root)))
    return choices


def recipe_values(recipe: str) -> list:
    """The hyper-parameter fields as a recipe sets them (defaults for what it leaves out)."""
    config = TrainConfig.from_dict(RECIPES.get(recipe, {}))
    return [getattr(config, name) for name in HYPER_FIELDS]


def upload_dataset(zip_file: str | None) -> tuple[gr.Dropdown, str]:
    """Unpacks an uploaded ImageFolder zip and selects it as the data."""
    if not zip_file:
        return gr.Dropdown(), ""
    dest = UPLOADS_DIR / f"{Path(zip_file).stem[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        root = extract_zip(zip_file, dest)
        classes = studio_data.class_names(str(root))
    except (UploadError, ValueError) as error:
        return gr.Dropdown(), f"⚠️ {error}"
    return (gr.Dropdown(choices=data_choices(), value=str(root)),
            f"Unpacked {len(classes)} classes: {', '.join(classes[:10])}{'…' if len(classes) > 10 else ''}")


def start_training(model: str, data: str, device: str, limit: float | None, epochs: float, batch_size: float,
                   lr: float, optimizer: str, momentum: float, weight_decay: float, schedule: str,
                   label_smoothing: float, batch_norm: bool) -> str:
    """Starts a run in the background (one at a time per app) and says so, or says why not."""
    try:
        config = TrainConfig(
            model=model, data=data, device=device or "auto", limit=int(limit) if limit else None,
            epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), optimizer=optimizer,
            momentum=float(momentum), weight_decay=float(weight_decay), schedule=schedule,
            label_smoothing=float(label_smoothing), batch_norm=bool(batch_norm),
            out=str(RUNS_DIR / f"{model}-{Path(data).name}-{time.strftime('%Y%m%d-%H%M%S')}"))
        RUNNER.start(config)
    except (BusyError, ValueError, TypeError) as error:
        return f"⚠️ {error}"
    return "Started: loading the data…"


def stop_training() -> str:
    return "Stopping after this step…" if RUNNER.stop() else "No run is going."


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60:02d} s"


def training_status() -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The run's state in words, the loss curves and the accuracy curves (polled every second)."""
    s = RUNNER.snapshot()
    if s.status == "idle":
        text = "No run yet. Pick a model and data, then Start."
    else:
        lines = [f"**{s.status.capitalize()}** · {s.message}"]
        if s.total_steps:
            percent = 100 * s.step / s.total_steps
            lines.append(f"Step {s.step:,} / {s.total_steps:,} ({percent:.0f}%) · epoch {s.epoch} / {s.epochs}"
                         f" · {s.images_per_s:,.0f} images/s · {_duration(s.eta_s)} left")
        if s.best_val_acc is not None:
            lines.append(f"Best validation accuracy {s.best_val_acc:.1%}"
                         + (f" · checkpoint `{s.best_path}`" if s.best_path else ""))
        text = "\n\n".join(lines)
    loss = pd.DataFrame([{"step": step, "loss": value, "curve": "train (per step)"} for step, value in s.steps]
                        + [{"step": h["step"], "loss": h["val_loss"], "curve": "validation"} for h in s.history],
                        columns=["step", "loss", "curve"])
    accuracy = pd.DataFrame([{"epoch": h["epoch"], "accuracy": h[key], "curve": label}
                             for h in s.history for key, label in (("train_acc", "train"), ("val_acc", "validation"))],
                            columns=["epoch", "accuracy", "curve"])
    return text, loss, accuracy


def _train_tab(app: gr.Blocks) -> None:
    defaults = TrainConfig(model="alexnet_cifar_small")
    with gr.Tab("Train"):
        with gr.Row():
            model = gr.Dropdown(choices=[(f"{n} — {s.title}", n) for n, s in MODELS.items()],
                                value=defaults.model, label="Model", scale=2)
            choices = data_choices()
            shared_cifar = str(SHARED_DATA / "cifar10")
            data = gr.Dropdown(choices=choices, label="Data", scale=2,
                               value=shared_cifar if shared_cifar in dict(choices).values() else "cifar10")
            device = gr.Dropdown(choices=["auto", *available_devices()], value="auto", label="Device", scale=1)
        with gr.Accordion("Upload an ImageFolder zip (class folders, or train/ and val/ folders)", open=False):
            zip_file = gr.File(label="Zip", file_types=[".zip"], type="filepath")
            upload_note = gr.Markdown()
        with gr.Row():
            recipe = gr.Dropdown(choices=[("Custom", "custom"), *[(name, name) for name in RECIPES]],
                                 value="custom", label="Recipe (fills the settings)", scale=2)
            limit = gr.Number(label="Images per split (blank: all)", value=None, precision=0, minimum=2, scale=1)
        with gr.Row():
            epochs = gr.Number(label="Epochs", value=defaults.epochs, precision=0, minimum=1, maximum=1000)
            batch_size = gr.Number(label="Batch size", value=defaults.batch_size, precision=0, minimum=2)
            lr = gr.Number(label="Learning rate", value=defaults.lr, minimum=0)
            optimizer = gr.Dropdown(choices=list(OPTIMIZERS), value=defaults.optimizer, label="Optimizer")
            momentum = gr.Number(label="Momentum", value=defaults.momentum, minimum=0, maximum=0.999)
        with gr.Row():
            weight_decay = gr.Number(label="Weight decay", value=defaults.weight_decay, minimum=0)
            schedule = gr.Dropdown(choices=list(SCHEDULES), value=defaults.schedule, label="Schedule")
            label_smoothing = gr.Number(label="Label smoothing", value=defaults.label_smoothing, minimum=0, maximum=0.9)
            batch_norm = gr.Checkbox(label="BatchNorm", value=defaults.batch_norm)
        with gr.Row():
            start = gr.Button("Start", variant="primary")
            stop = gr.Button("Stop", variant="stop")
        status = gr.Markdown("No run yet.")
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="loss", color="curve", title="Loss", height=300)
            acc_plot = gr.LinePlot(x="epoch", y="accuracy", color="curve", title="Accuracy", height=300,
                                   y_lim=[0, 1])
        timer = gr.Timer(1.0)

    hyper = [epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, label_smoothing, batch_norm]
    recipe.change(lambda r: recipe_values(r) if r != "custom" else [gr.update()] * len(hyper),
                  inputs=recipe, outputs=hyper, api_name=False)
    zip_file.upload(upload_dataset, inputs=zip_file, outputs=[data, upload_note], api_name=False)
    start.click(start_training, inputs=[model, data, device, limit, *hyper], outputs=status, api_name="train")
    stop.click(stop_training, outputs=status, api_name="train_stop")
    outputs = [status, loss_plot, acc_plot]
    timer.tick(training_status, outputs=outputs, api_name="train_status", show_progress="hidden")
    app.load(training_status, outputs=outputs, api_name=False)


# --- The app ----------------------------------------------------------------------------------------


def build_app() -> gr.Blocks:
    # The first meta-device pass sets PyTorch's meta kernels up (about a second): pay that at start,
    # not on the first page load.
    summarize(DEFAULT_MODEL, get_spec(DEFAULT_MODEL).input_size)
    with gr.Blocks(title="AlexNet Studio") as app:
        gr.Markdown("# AlexNet Studio\nInspect, train and use AlexNet and its variants.")
        with gr.Tabs():
            _architecture_tab(app)
            _train_tab(app)
    return app


if __name__ == "__main__":
    build_app().queue().launch()
