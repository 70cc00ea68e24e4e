"""AlexNet Studio in the browser: ``python gradio_app.py`` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT apply).

The layout lives in ``build_app`` and one small ``_<name>_tab`` function per tab; the handlers are plain
module-level functions that call alexnet_core, so tests and the API can call them directly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
import threading
import time
from pathlib import Path

from alexnet_core.data import default_home

# Everything the app writes (downloads, decoded caches, uploads, training runs, torchvision's weights and
# Gradio's own upload folder) goes under one folder, $ALEXNET_STUDIO_HOME. Set before gradio is imported,
# which reads GRADIO_TEMP_DIR once; an explicit setting of either variable wins.
STUDIO_HOME = default_home()
os.environ.setdefault("GRADIO_TEMP_DIR", str(STUDIO_HOME / "gradio"))
os.environ.setdefault("TORCH_HOME", str(STUDIO_HOME / "torch"))

import gradio as gr  # noqa: E402
import torch  # noqa: E402
import pandas as pd
from matplotlib.figure import Figure

from PIL import Image, ImageOps

from alexnet_core import data as studio_data
from alexnet_core.checkpoints import list_checkpoints, read_metadata
from alexnet_core.devices import available_devices, resolve_device
from alexnet_core.transforms import TTA_CHOICES as EVAL_TTA_CHOICES
from alexnet_core.evaluate import EvalResult, evaluate_checkpoint
from alexnet_core.models import MODELS, get_spec
from alexnet_core.plots import confusion_plot, shape_plot
from alexnet_core.predict import Prediction, get_predictor, network_view
from alexnet_core.runner import RUNNER, BusyError
from alexnet_core.geometry import SizeError
from alexnet_core.summary import TABLE_COLUMNS, summarize, table_rows
from alexnet_core.config import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig
from alexnet_core.uploads import UploadError, extract_zip

REPO = Path(__file__).resolve().parent
# The data sets that sit beside the repo on the development machines (see ../shared/data/README.md).
SHARED_DATA = REPO.parent / "shared" / "data"
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


def _architecture_tab(app: gr.Blocks) -> tuple[gr.Dropdown, gr.Dropdown, gr.Button]:
    with gr.Tab("Architecture", id="architecture"):
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
        with gr.Row():
            layer = gr.Dropdown(label="Layer", scale=1)
            look = gr.Button("See what this layer sees in a photo (Inside tab) →", scale=2)
        custom_totals = gr.Markdown(label="Custom size totals")
        plot = gr.Plot(label="Shapes layer by layer")

    gr.on(
        triggers=[app.load, model.change, custom_size.change, batch_norm.change],
        fn=architecture,
        inputs=[model, custom_size, batch_norm],
        outputs=[variant_text, *tables, custom_totals, plot],
        api_name="summary",
    )
    gr.on(triggers=[app.load, model.change], fn=conv_layer_choices, inputs=model, outputs=layer, api_name=False)
    return model, layer, look


# --- Train tab ------------------------------------------------------------------------------------------

BUILTIN_DATA = [("CIFAR-10 (downloaded on first use)", "cifar10"),
                ("Fashion-MNIST (downloaded on first use)", "fashion-mnist"),
                ("Flowers, 5 classes (downloaded on first use)", "flowers")]
# The Train tab's hyper-parameter fields, in the order the handlers take them.
HYPER_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                "label_smoothing", "batch_norm", "whiten")


@dataclass(frozen=True)
class TrainingCaps:
    """Limits on training runs started from the app, for a server that many people share (a Space).

    Set by ALEXNET_STUDIO_MAX_EPOCHS, ALEXNET_STUDIO_MAX_TRAIN_MINUTES and ALEXNET_STUDIO_MAX_IMAGES (images per
    split); "0" or unset means no cap, except on a Hugging Face Space (SPACE_ID is set), where the defaults
    below keep one visitor from holding the shared CPU for long. The command line is never capped."""

    epochs: int | None = None
    minutes: float | None = None
    images: int | None = None

    SPACE_DEFAULTS = {"epochs": 30, "minutes": 15, "images": 5000}

    @classmethod
    def from_env(cls, env=os.environ) -> "TrainingCaps":
        on_space = bool(env.get("SPACE_ID"))

        def cap(name: str, key: str, kind):
            raw = env.get(name)
            if raw is None:
                return cls.SPACE_DEFAULTS[key] if on_space else None
            value = kind(raw)
            if value < 0:
                raise ValueError(f"{name} must be 0 (no cap) or a positive number, not {raw}.")
            return value or None

        return cls(epochs=cap("ALEXNET_STUDIO_MAX_EPOCHS", "epochs", int),
                   minutes=cap("ALEXNET_STUDIO_MAX_TRAIN_MINUTES", "minutes", float),
                   images=cap("ALEXNET_STUDIO_MAX_IMAGES", "images", int))

    def describe(self) -> str:
        parts = [f"at most {self.epochs} epochs" if self.epochs else "",
                 f"{self.minutes:g} minutes a run" if self.minutes else "",
                 f"{self.images:,} images per split" if self.images else ""]
        parts = [p for p in parts if p]
        return ("This server caps training: " + ", ".join(parts) + ". A run that reaches the time cap stops "
                "and keeps its best checkpoint. No caps apply to the command line.") if parts else ""

    def apply(self, config: TrainConfig) -> TrainConfig:
        """The config within the caps: too many epochs is refused (say so, do not train something else);
        the image count and the time are capped quietly, as the Train tab states."""
        if self.epochs and config.epochs > self.epochs:
            raise ValueError(f"This server allows at most {self.epochs} epochs a run; you asked for "
                             f"{config.epochs}. Train longer with the command line on your own machine.")
        changes = {}
        if self.images:
            changes["limit"] = min(config.limit or self.images, self.images)
        if self.minutes:
            changes["time_limit"] = min(config.time_limit or self.minutes * 60, self.minutes * 60)
        return dataclasses.replace(config, **changes)


TRAINING_CAPS = TrainingCaps.from_env()


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
                   label_smoothing: float, batch_norm: bool, whiten: bool = False) -> str:
    """Starts a run in the background (one at a time per app) and says so, or says why not."""
    try:
        from alexnet_core.config import config_from_form  # one sentence per field of the wrong type or empty

        config = config_from_form(
            model=model, data=data, device=device or "auto", limit=limit or None,
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
            momentum=momentum, weight_decay=weight_decay, schedule=schedule,
            label_smoothing=label_smoothing, batch_norm=bool(batch_norm), whiten=bool(whiten),
            out=str(RUNS_DIR / f"{model}-{Path(data).name}-{time.strftime('%Y%m%d-%H%M%S')}"))
        RUNNER.start(TRAINING_CAPS.apply(config))
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
    with gr.Tab("Train", id="train"):
        caps = TRAINING_CAPS.describe()
        gr.Markdown(f"ℹ️ {caps}", visible=bool(caps), elem_id="training-caps")
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
            # No minimum: the browser sends a blank number as 0, which means "all" (TrainConfig checks the rest).
            limit = gr.Number(label="Images per split (0 or blank: all)", value=None, precision=0, scale=1)
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
            whiten = gr.Checkbox(label="Whitened conv1", value=defaults.whiten,
                                 info="conv1 starts as a whitening of the training patches and stays frozen (airbench)")
        with gr.Row():
            start = gr.Button("Start", variant="primary")
            stop = gr.Button("Stop", variant="stop")
        status = gr.Markdown("No run yet.")
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="loss", color="curve", title="Loss", height=300)
            acc_plot = gr.LinePlot(x="epoch", y="accuracy", color="curve", title="Accuracy", height=300,
                                   y_lim=[0, 1])
        timer = gr.Timer(1.0)

    hyper = [epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, label_smoothing, batch_norm,
             whiten]
    recipe.change(lambda r: recipe_values(r) if r != "custom" else [gr.update()] * len(hyper),
                  inputs=recipe, outputs=hyper, api_name=False)
    zip_file.upload(upload_dataset, inputs=zip_file, outputs=[data, upload_note], api_name=False)
    start.click(start_training, inputs=[model, data, device, limit, *hyper], outputs=status, api_name="train")
    stop.click(stop_training, outputs=status, api_name="train_stop")
    outputs = [status, loss_plot, acc_plot]
    timer.tick(training_status, outputs=outputs, api_name="train_status", show_progress="hidden")
    app.load(training_status, outputs=outputs, api_name=False)


# --- Checkpoints, wherever they are -------------------------------------------------------------------

SHIPPED_DIR = REPO / "checkpoints"
# What /predict uses when the caller names no checkpoint.
DEFAULT_CHECKPOINT = SHIPPED_DIR / "cifar10.safetensors"
NO_CHECKPOINT = ("⚠️ There is no checkpoint yet: train one in the Train tab (it appears here when it "
                 "finishes), or put one in checkpoints/.")


def checkpoint_choices() -> list[tuple[str, str]]:
    """(label, path) of every checkpoint: the shipped ones first, then runs (this app's and ./runs), newest first."""
    found = list_checkpoints(SHIPPED_DIR, Path.cwd() / "runs", RUNS_DIR)
    found.sort(key=lambda info: not info.path.resolve().is_relative_to(SHIPPED_DIR.resolve()))  # stable
    return [(info.name, str(info.path)) for info in found]


def default_checkpoint() -> str | None:
    """The CIFAR-10 checkpoint where it is shipped, else the first one listed, else None."""
    if DEFAULT_CHECKPOINT.is_file():
        return str(DEFAULT_CHECKPOINT)
    choices = checkpoint_choices()
    return choices[0][1] if choices else None


def refresh_checkpoints(current: str | None) -> gr.Dropdown:
    """The checkpoint list as it is now (a run may have finished), keeping the selection where it still exists."""
    choices = checkpoint_choices()
    paths = [path for _, path in choices]
    return gr.Dropdown(choices=choices, value=current if current in paths else default_checkpoint())


# --- Predict tab ----------------------------------------------------------------------------------------

EXAMPLES_DIR = REPO / "examples"
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Single photos are fastest on the CPU: a GPU's transfers and launches cost more than a small net's forward pass.
PREDICT_DEVICE = "cpu"
MAX_BARS = 20  # the bar chart shows at most this many classes (a 1000-class net's tail is unreadable)
TTA_LABELS = {"none": "no test-time augmentation", "flip": "the image and its mirror (2 views)",
              "ten-crop": "the paper's ten crops (10 views)"}
PREDICT_PROMPT = "Upload a photo, take one with the webcam, paste one, or click an example."


def photo_input(**options) -> gr.Image:
    """A gr.Image that passes PIL images on in their own mode (decode_image handles every mode; Gradio's RGB
    conversion would drop transparency and clip 16-bit images), and hands a file Pillow cannot open to the
    handler as its path instead of failing inside Gradio, so that the user reads decode_image's sentence rather
    than a bare "Error". (Wrapped per instance: a gr.Image subclass would make Gradio write a .pyi file here.)"""
    image = gr.Image(type="pil", image_mode=None, **options)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        try:
            return gradio_preprocess(payload)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # Pillow's errors for what is not an image
            return payload.path

    image.preprocess = preprocess
    return image


def _empty_bars() -> pd.DataFrame:
    # Typed columns: an untyped empty frame makes "class" numeric, and the chart then never draws the classes.
    return pd.DataFrame({"class": pd.Series([], dtype=str), "probability": pd.Series([], dtype=float)})


def _readable(error: Exception, image) -> str:
    """The error's sentence, with an uploaded file known by its name rather than Gradio's temporary path."""
    text = str(error)
    if isinstance(image, str):
        text = text.replace(image, Path(image).name)
    return f"⚠️ {text}"


def predict_image(image: Image.Image | str | None, checkpoint: str | None = None, k: float = 5,
                  tta: str = "none") -> tuple[dict | None, str, tuple[Prediction, studio_data.Preprocess] | None]:
    """The top-k classes (for gr.Label) and a line with the inference time, or the sentence that says what is
    wrong; and the prediction with its preprocessing, kept for ``prediction_details`` (a gr.State)."""
    if image is None:
        return None, PREDICT_PROMPT, None
    path = checkpoint or default_checkpoint()
    if path is None:
        return None, NO_CHECKPOINT, None
    try:
        predictor = get_predictor(path, PREDICT_DEVICE)
        prediction = predictor.predict(image, k=k, tta=tta)
    except ValueError as error:  # not an image, a bad checkpoint, a bad k or tta: one sentence each
        return None, _readable(error, image), None
    info = (f"{1000 * prediction.seconds:.1f} ms on {PREDICT_DEVICE} (decode, preprocess, forward, softmax) · "
            f"{TTA_LABELS[prediction.tta]} · {predictor.meta['model']} from `{Path(path).name}`")
    return dict(prediction.top), info, (prediction, predictor.pre)


def prediction_details(shown: tuple[Prediction, studio_data.Preprocess] | None) -> tuple[pd.DataFrame, Image.Image | None]:
    """Every class's probability (for the bar chart) and the image as the network sees it.

    A step of its own after /predict, for the page only: API callers, who get the top classes, do not wait
    for a PNG and a chart they never see.
    """
    if shown is None:
        return _empty_bars(), None
    prediction, pre = shown
    ranked = sorted(prediction.probabilities.items(), key=lambda item: item[1], reverse=True)[:MAX_BARS]
    bars = pd.DataFrame({"class": [name for name, _ in ranked], "probability": [p for _, p in ranked]})
    return bars, network_view(prediction, pre)


# One photo per flower class and a few CIFAR-10 test images, read where ../shared/data is present (the data
# sets' images are not copied into the repository); photos a user drops into examples/ show as well.
SHARED_EXAMPLES = ("flowers5/val/daisy/10437929963_bc13eebe0c.jpg",
                   "flowers5/val/dandelion/11768468623_9399b5111b_n.jpg",
                   "flowers5/val/roses/10503217854_e66a804309.jpg",
                   "flowers5/val/sunflowers/12471791574_bb1be83df4.jpg",
                   "flowers5/val/tulips/116343334_9cb4acdc57_n.jpg",
                   "cifar10/test/cat/0000.jpg", "cifar10/test/ship/0000.jpg", "cifar10/test/automobile/0000.jpg")


def _example_photos() -> list[list[str]]:
    own = sorted(EXAMPLES_DIR.iterdir()) if EXAMPLES_DIR.is_dir() else []
    shared = [SHARED_DATA / name for name in SHARED_EXAMPLES]
    return [[str(path)] for path in own + shared
            if path.is_file() and path.suffix.lower() in EXAMPLE_SUFFIXES]


def _predict_tab(app: gr.Blocks) -> None:
    with gr.Tab("Predict", id="predict") as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image = photo_input(sources=["upload", "webcam", "clipboard"], label="Photo")
                examples = _example_photos()
                if examples:
                    gr.Examples(examples, inputs=image, label="Examples: click one", examples_per_page=12)
                checkpoint = gr.Dropdown(choices=checkpoint_choices(), value=default_checkpoint(),
                                         label="Checkpoint")
                with gr.Row():
                    k = gr.Slider(1, 10, value=5, step=1, label="Top classes (k)")
                    tta = gr.Radio(list(TTA_LABELS), value="none", label="Test-time augmentation")
            with gr.Column(scale=1):
                top = gr.Label(num_top_classes=10, label="Top classes")
                bars = gr.BarPlot(_empty_bars(), x="class", y="probability", sort="-y", y_lim=[0, 1],
                                  title="Probability of each class", height=260)
                info = gr.Markdown(PREDICT_PROMPT)
                view = gr.Image(label="What the network sees (after preprocessing)", format="png",
                                interactive=False, height=260)
        # Inside the Tab: a component left directly under gr.Tabs shifts the browser's tab order by one,
        # and a later tab then takes the place of the one after it (tests/test_app_layout.py).
        shown = gr.State()

    tab.select(refresh_checkpoints, inputs=checkpoint, outputs=checkpoint, api_name=False)
    gr.on(
        triggers=[image.change, checkpoint.change, k.change, tta.change],
        fn=predict_image,
        inputs=[image, checkpoint, k, tta],
        outputs=[top, info, shown],
        api_name="predict",
        trigger_mode="always_last",
    ).then(prediction_details, inputs=shown, outputs=[bars, view], api_name=False, show_progress="hidden")


# --- Evaluate tab ---------------------------------------------------------------------------------------

MISTAKES_SHOWN = 12
GALLERY_MIN_SIDE = 128  # small images (CIFAR's 32) are enlarged, without smoothing, to at least this
GALLERY_MAX_SIDE = 256  # and large photos shrunk, to keep the page light


def _gallery_image(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image).convert("RGB")
    if max(image.size) > GALLERY_MAX_SIDE:
        image.thumbnail((GALLERY_MAX_SIDE, GALLERY_MAX_SIDE))
    elif max(image.size) < GALLERY_MIN_SIDE:
        factor = -(-GALLERY_MIN_SIDE // max(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return image


def _mistake_images(result: EvalResult, indices: list[int], checkpoint: str, data: str, split: str,
                    limit: int | None) -> list[Image.Image]:
    """The images behind ``indices``: from their files where the data has files, else from the decoded split
    (built-in sources), loaded with the arguments evaluate_checkpoint uses."""
    if result.paths:
        images = []
        for i in indices:
            with Image.open(result.paths[i]) as opened:
                images.append(_gallery_image(opened))
        return images
    meta = read_metadata(checkpoint)
    config = meta.get("config", {})
    pre = studio_data.Preprocess.from_dict(meta["preprocess"])
    split_data = studio_data.load_split(data, split, pre, val_fraction=config.get("val_fraction", 0.1),
                                        seed=config.get("seed", 0), limit=limit)
    pixels = [split_data.images[i].permute(1, 2, 0).numpy() for i in indices]
    return [_gallery_image(Image.fromarray(p[:, :, 0] if p.shape[2] == 1 else p)) for p in pixels]


def evaluate_view(checkpoint: str | None, data: str | None, split: str = "test", limit: float | None = 1000,
                  tta: str = "none") -> tuple[str, pd.DataFrame, Figure | None, list]:
    """Accuracy in words, per-class accuracy (a table), the confusion matrix (a heat map) and the most
    confidently wrong images with their captions; or the sentence that says what is wrong."""
    empty = pd.DataFrame(columns=["class", "accuracy", "correct", "images"])
    checkpoint = checkpoint or default_checkpoint()
    if checkpoint is None:
        return NO_CHECKPOINT, empty, None, []
    if not data:
        return "⚠️ Pick the data to evaluate on.", empty, None, []
    limit = int(limit) if limit else None
    try:
        result = evaluate_checkpoint(checkpoint, data, split, device=str(resolve_device("auto")), tta=tta,
                                     limit=limit)
        mistakes = result.most_confident_mistakes(MISTAKES_SHOWN)
        images = _mistake_images(result, mistakes, checkpoint, data, split, limit)
    except ValueError as error:  # wrong data for the checkpoint, a missing split, a damaged file: one sentence
        return f"⚠️ {error}", empty, None, []
    confusion = result.confusion()
    correct, totals = confusion.diag().tolist(), confusion.sum(1).tolist()
    table = pd.DataFrame([{"class": c, "accuracy": f"{correct[i] / totals[i]:.1%}", "correct": correct[i],
                           "images": totals[i]} for i, c in enumerate(result.classes) if totals[i]])
    summary = (f"### {result.accuracy:.1%} correct\n\n{int(sum(correct)):,} of {result.n:,} images measured "
               f"({result.measured}) · mean loss {result.loss:.3f} · test-time augmentation: {tta}")
    captions = [f"true: {result.classes[result.labels[i]]} · predicted: {result.classes[result.predictions[i]]} "
                f"{result.confidences[i]:.0%}" for i in mistakes]
    return summary, table, confusion_plot(result), list(zip(images, captions))


def _evaluate_tab(app: gr.Blocks) -> None:
    with gr.Tab("Evaluate", id="evaluate") as tab:
        with gr.Row():
            checkpoint = gr.Dropdown(choices=checkpoint_choices(), value=default_checkpoint(),
                                     label="Checkpoint", scale=3)
            choices = data_choices()
            shared_cifar = str(SHARED_DATA / "cifar10")
            data = gr.Dropdown(choices=choices, label="Data", scale=3,
                               value=shared_cifar if shared_cifar in dict(choices).values() else "cifar10")
        with gr.Row():
            split = gr.Radio(["test", "val"], value="test", label="Split")
            limit = gr.Number(label="Images (0 or blank: all)", value=1000, precision=0, minimum=0)
            tta = gr.Radio(list(EVAL_TTA_CHOICES), value="none", label="Test-time augmentation")
            run = gr.Button("Evaluate", variant="primary")
        summary = gr.Markdown("Pick a checkpoint and data, then Evaluate.")
        with gr.Row(equal_height=False):
            table = gr.Dataframe(label="Accuracy per class", interactive=False)
            matrix = gr.Plot(label="Confusion matrix")
        gallery = gr.Gallery(label="Most confidently wrong", columns=6, height="auto", object_fit="contain")

    tab.select(refresh_checkpoints, inputs=checkpoint, outputs=checkpoint, api_name=False)
    run.click(evaluate_view, inputs=[checkpoint, data, split, limit, tta], outputs=[summary, table, matrix, gallery],
              api_name="evaluate")


def _preload_shipped() -> None:
    """Loads and warms the shipped checkpoints, so that the first /predict pays for neither.

    Runs in a background thread once the app is built: the page is served at once, and a request that comes
    before the warm-up ends simply loads the model itself (the predictor cache is shared and locked)."""
    for path in sorted(SHIPPED_DIR.glob("*.safetensors")):
        try:
            get_predictor(path, PREDICT_DEVICE)
        except ValueError:  # a damaged file is reported when someone picks it, not at start
            pass
    import alexnet_core.explain  # noqa: F401  (OpenCV and Grad-CAM: warm for the first Inside request)


# --- Inside tab -----------------------------------------------------------------------------------------

UNTRAINED = "untrained:"  # choice values: a checkpoint's path, or "untrained:<variant>"
PREDICTED = "predicted class"
INSIDE_PROMPT = "Upload a photo to see what each conv layer sees and where the network looks."


def inside_choices() -> list[tuple[str, str]]:
    """Every checkpoint, then every variant with random weights (to compare with what training learnt)."""
    return checkpoint_choices() + [(f"untrained {name} (random weights)", UNTRAINED + name) for name in MODELS]


@functools.lru_cache(maxsize=2)  # the paper's nets take a quarter of a second to build
def _untrained(name: str):
    from alexnet_core.explain import untrained_variant  # Grad-CAM pulls in OpenCV: not at start-up

    return untrained_variant(name)


def _inside_model(choice: str):
    """(model, metadata) for a choice; checkpoints come from Predict's cache (reloaded when the file changes)."""
    if choice.startswith(UNTRAINED):
        return _untrained(choice[len(UNTRAINED):])
    predictor = get_predictor(choice, PREDICT_DEVICE)
    return predictor.model, predictor.meta


def class_choices(choice: str | None) -> gr.Dropdown:
    """The class picker for a model: "predicted class", then the model's classes."""
    try:
        classes = _inside_model(choice)[1]["classes"] if choice else []
    except ValueError:  # a broken checkpoint: explain_photo says why
        classes = []
    return gr.Dropdown(choices=[PREDICTED, *classes], value=PREDICTED)


def explain_photo(image: Image.Image | str | None, checkpoint: str | None = None, target: str | None = PREDICTED,
                  layer: str | None = None) -> tuple[dict | None, Image.Image | None, Image.Image | None, list, str]:
    """Top classes, Grad-CAM over the photo, conv1's filters, a gallery of each conv layer's most active
    channels, and a line that says which class Grad-CAM explains — or the sentence that says what is wrong.

    ``layer`` (e.g. "conv3", from the Architecture tab's link) opens the gallery on that layer."""
    from alexnet_core.explain import explain  # Grad-CAM pulls in OpenCV: not at start-up

    if image is None:
        return None, None, None, [], INSIDE_PROMPT
    choice = checkpoint or default_checkpoint()
    if choice is None:
        return None, None, None, [], NO_CHECKPOINT
    try:
        model, meta = _inside_model(choice)
        start = time.perf_counter()
        result = explain(model, meta, image, target_class=None if target in (None, "", PREDICTED) else target)
    except ValueError as error:  # not an image, a bad checkpoint, an unknown class: one sentence each
        return None, None, None, [], _readable(error, image)
    info = (f"Grad-CAM explains **{result.target_name}** · {time.perf_counter() - start:.2f} s on the CPU · "
            f"{meta['model']} · each tile is one channel, normalised on its own (dark: quiet, bright: active)")
    gallery = [(grid.image, grid.label) for grid in result.activations]
    layers = [grid.layer for grid in result.activations]
    if layer in layers:
        gallery = gr.Gallery(value=gallery, selected_index=layers.index(layer))
    return dict(result.top_k), result.gradcam, result.filters, gallery, info


def conv_layer_choices(model: str) -> gr.Dropdown:
    """The Architecture tab's layer picker: the variant's conv layers."""
    names = [name for name, module in get_spec(model).build().features.named_children()
             if isinstance(module, torch.nn.Conv2d)] if model in MODELS else []
    return gr.Dropdown(choices=names, value=names[-1] if names else None)


def show_layer_inside(model: str, layer: str | None, checkpoint: str | None, image):
    """The Architecture tab's link: opens the Inside tab on ``layer`` of ``model`` — with a checkpoint of that
    variant where there is one, else the untrained variant — and an example photo if none is there yet."""
    if not (checkpoint and not checkpoint.startswith(UNTRAINED) and _checkpoint_model(checkpoint) == model):
        trained = [path for _, path in checkpoint_choices() if _checkpoint_model(path) == model]
        checkpoint = trained[0] if trained else UNTRAINED + model
    if image is None and _example_photos():
        image = Image.open(_example_photos()[0][0])
    return gr.Tabs(selected="inside"), gr.Dropdown(choices=inside_choices(), value=checkpoint), image, layer


def _checkpoint_model(path: str) -> str | None:
    try:
        return read_metadata(path)["model"]
    except (ValueError, OSError):
        return None


def _inside_tab(app: gr.Blocks) -> tuple[gr.Image, gr.Dropdown, gr.State, gr.Dependency]:
    with gr.Tab("Inside", id="inside") as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image = photo_input(label="Photo")
                checkpoint = gr.Dropdown(choices=inside_choices(), value=default_checkpoint(), label="Checkpoint")
                # Any value, so that the API can name a class: explain_photo answers an unknown one with a
                # sentence that lists the classes.
                target = gr.Dropdown(choices=[PREDICTED], value=PREDICTED, label="Grad-CAM explains",
                                     allow_custom_value=True)
                top = gr.Label(num_top_classes=5, label="Top classes")
            with gr.Column(scale=1):
                gradcam = gr.Image(label="Grad-CAM: where the network looks", format="png", interactive=False)
                filters = gr.Image(label="conv1's filters", format="png", interactive=False)
        info = gr.Markdown(INSIDE_PROMPT)
        gallery = gr.Gallery(label="Most active channels of each conv layer", columns=5, object_fit="contain",
                             format="png")
        focus = gr.State(None)     # the layer the Architecture tab's link asked for

    tab.select(lambda current: gr.Dropdown(choices=inside_choices(), value=current), inputs=checkpoint,
               outputs=checkpoint, api_name=False)
    checkpoint.change(class_choices, inputs=checkpoint, outputs=target, api_name=False)
    app.load(class_choices, inputs=checkpoint, outputs=target, api_name=False)
    explained = gr.on(
        triggers=[image.change, checkpoint.change, target.change, focus.change],
        fn=explain_photo,
        inputs=[image, checkpoint, target, focus],
        outputs=[top, gradcam, filters, gallery, info],
        api_name="explain",
        trigger_mode="always_last",
    )
    return image, checkpoint, focus, explained


# --- The app ----------------------------------------------------------------------------------------


def build_app() -> gr.Blocks:
    # The first meta-device pass sets PyTorch's meta kernels up (about a second): pay that at start,
    # not on the first page load.
    summarize(DEFAULT_MODEL, get_spec(DEFAULT_MODEL).input_size)
    threading.Thread(target=_preload_shipped, name="preload-checkpoints", daemon=True).start()
    with gr.Blocks(title="AlexNet Studio") as app:
        gr.Markdown("# AlexNet Studio\nInspect, train and use AlexNet and its variants.")
        with gr.Tabs() as tabs:
            model, layer, look = _architecture_tab(app)
            _train_tab(app)
            _predict_tab(app)
            _evaluate_tab(app)
            image, checkpoint, focus, _ = _inside_tab(app)
        # The Architecture tab links each layer to its activations in the Inside tab.
        look.click(show_layer_inside, inputs=[model, layer, checkpoint, image],
                   outputs=[tabs, checkpoint, image, focus], api_name=False)
    return app


# How many requests of one event may run at once. Predict and Inside answer in milliseconds to a second on a
# CPU, so a few at a time keep a 2-vCPU Space responsive; the queue holds the rest in order.
CONCURRENCY = int(os.environ.get("ALEXNET_STUDIO_CONCURRENCY", "2"))
# Uploads (photos, zipped data sets) larger than this are refused by Gradio before any of our code runs.
MAX_UPLOAD = os.environ.get("ALEXNET_STUDIO_MAX_UPLOAD", "200mb")


def launch(app: gr.Blocks | None = None, **kwargs) -> gr.Blocks:
    """Queues and serves the app (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT and GRADIO_ROOT_PATH apply)."""
    app = app or build_app()
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=100)
    app.launch(max_file_size=MAX_UPLOAD, **kwargs)
    return app


if __name__ == "__main__":
    launch()
