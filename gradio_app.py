"""AlexNet Studio in the browser: ``python gradio_app.py`` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT apply).

The layout lives in ``build_app`` and one small ``_<name>_tab`` function per tab; the handlers are plain
module-level functions that call alexnet_core, so tests and the API can call them directly.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import html
import io
import os
import re
import secrets
import shutil
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

import gradio as gr
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from alexnet_core import data as studio_data
from alexnet_core import imagenet, images
from alexnet_core.caps import SharingLimits, TrainingCaps
from alexnet_core.checkpoints import list_checkpoints, read_metadata
from alexnet_core.config import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig
from alexnet_core.devices import available_devices, resolve_device
from alexnet_core.evaluate import EvalResult, evaluate_checkpoint
from alexnet_core.geometry import MAX_INPUT_SIZE, SizeError
from alexnet_core.models import MODELS, get_spec
from alexnet_core.plots import confusion_plot, shape_plot
from alexnet_core.predict import Prediction, get_predictor, network_view
from alexnet_core.runner import LOCAL, RUNNER, BusyError, RunSnapshot, ServerBusyError
from alexnet_core.summary import TABLE_COLUMNS, summarize, table_rows
from alexnet_core.transforms import TTA_CHOICES as EVAL_TTA_CHOICES
from alexnet_core.transforms import Preprocess
from alexnet_core.uploads import MAX_TOTAL_BYTES, UploadError, check_dataset, dataset_root, extract_zip

REPO = Path(__file__).resolve().parent
# The data sets that sit beside the repo on the development machines (see ../shared/data/README.md); the tests'
# variable moves it (a path that does not exist gives the app as a fresh clone or a Space has it).
SHARED_DATA = Path(os.environ.get("ALEXNET_STUDIO_SHARED_DATA", REPO.parent / "shared" / "data"))
RUNS_DIR = STUDIO_HOME / "runs"
UPLOADS_DIR = STUDIO_HOME / "uploads"

# The two sizes every variant is compared at: ImageNet's (as the paper states it) and CIFAR-10's.
COMPARED_SIZES = (224, 32)
# Rows that never change a shape; hiding them keeps two tables readable side by side.
HIDDEN_TYPES = ("ReLU", "Dropout")
# The tab opens on the paper's AlexNet beside its CIFAR-10 adaptation, each at its own input size (227, 32).
PAIR = ("alexnet", "alexnet_cifar")
LARGE_MODELS = [name for name, spec in MODELS.items() if spec.input_size > 32]   # made for 224/227
SMALL_MODELS = [name for name, spec in MODELS.items() if spec.input_size <= 32]  # made for 32
# The variant looked at closer (its story, any size, the shape plot): the left one of the pair to start with,
# and the custom size starts at its own size.
DEFAULT_MODEL = PAIR[0]
DEFAULT_CUSTOM_SIZE = MODELS[DEFAULT_MODEL].input_size
# The pair's tables, narrow enough that two fit side by side on a 1400 px screen: the batch dimension, the
# layer type (the name says it) and the MACs (in the heading's total) are left out.
COMPACT_COLUMNS = ["Layer", "Output", "Params", "RF", "Arithmetic"]


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


def _compact_rows(summary) -> list[list[str]]:
    return [[row.name, "×".join(map(str, row.output_shape[1:])), f"{row.params:,}", str(row.receptive_field),
             row.arithmetic] for row in summary.layers if row.type not in HIDDEN_TYPES]


def _own_size_table(model: str, batch_norm: bool) -> tuple[str, list[list[str]]]:
    """One side of the pair: the variant at its own input size, a heading with its totals and its rows."""
    spec = get_spec(model)
    summary = summarize(model, spec.input_size, batch_norm=batch_norm)
    heading = (f"#### {spec.title} at {spec.input_size}×{spec.input_size}\n\n"
               f"`{model}` · {summary.total_params:,} parameters · {summary.total_macs:,} MACs · "
               f"{spec.num_classes:,} classes")
    return heading, _compact_rows(summary)


def layer_table_html(rows: list[list[str]]) -> str:
    """A plain HTML table (whole, never scrolled: the page decides its width); numbers right-aligned, only the
    arithmetic wraps (CSS's .layers)."""
    kinds = ["name", "shape", "num", "num", "arith"]
    head = "".join(f"<th class='{kind}'>{html.escape(name)}</th>" for kind, name in zip(kinds, COMPACT_COLUMNS))
    body = "".join("<tr>" + "".join(f"<td class='{kind}'>{html.escape(cell)}</td>" for kind, cell in zip(kinds, row))
                   + "</tr>" for row in rows)
    return f"<table class='layers'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def compare(large: str, small: str, batch_norm: bool = False) -> tuple[str, str, str, str]:
    """The Architecture tab's first view: a variant made for 224/227 beside one made for 32, each at its own
    size (the paper's AlexNet at 227, its CIFAR-10 adaptation at 32 to start with): a heading with the totals
    and the layer table (HTML) of each."""
    outputs: list = []
    for model in (large, small):
        heading, rows = _own_size_table(model, batch_norm)
        outputs += [heading, layer_table_html(rows)]
    return tuple(outputs)


def own_size(model: str) -> int:
    """The custom size a variant starts at: its own input size."""
    return get_spec(model).input_size


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
        with gr.Row(equal_height=False):
            pair = []
            for names, default, label in ((LARGE_MODELS, PAIR[0], "Made for 224/227"),
                                          (SMALL_MODELS, PAIR[1], "Made for 32")):
                # min_width: two tables side by side on a desktop, one above the other on a phone.
                with gr.Column(min_width=520, elem_classes=["layer-table"]):
                    choice = gr.Dropdown(choices=[(f"{name} — {MODELS[name].title}", name) for name in names],
                                         value=default, label=label)
                    heading = gr.Markdown()
                    table = gr.HTML(label=f"Layers ({label.lower()})")
                    pair.append((choice, heading, table))
        gr.Markdown("### One variant closer: its story, any input size, the shapes layer by layer")
        with gr.Row():
            model = gr.Dropdown(
                choices=[(f"{name} — {spec.title}", name) for name, spec in MODELS.items()],
                value=DEFAULT_MODEL, label="Model", scale=3, min_width=280,
            )
            batch_norm = gr.Checkbox(label="BatchNorm", value=False, scale=1)
            custom_size = gr.Number(value=DEFAULT_CUSTOM_SIZE, label="Custom size",
                                    precision=0, minimum=1, maximum=MAX_INPUT_SIZE, scale=1)
        variant_text = gr.Markdown(label="Variant")
        with gr.Row():
            layer = gr.Dropdown(label="Layer", scale=1)
            look = gr.Button("See what this layer sees in a photo (Inside tab) →", scale=2)
        custom_totals = gr.Markdown(label="Custom size totals")
        plot = gr.Plot(label="Shapes layer by layer", elem_classes=["mpl-figure"])
        with gr.Accordion("This variant at 224 and at 32 (all columns)", open=False):
            with gr.Row(equal_height=False):
                tables = []
                for size in COMPARED_SIZES:
                    with gr.Column(min_width=520):
                        tables += [
                            gr.Markdown(label=f"Totals at {size}"),
                            gr.Dataframe(headers=TABLE_COLUMNS, label=f"Layers at {size}", interactive=False,
                                         wrap=True),
                        ]

    (large, large_heading, large_table), (small, small_heading, small_table) = pair
    gr.on(triggers=[app.load, large.change, small.change, batch_norm.change], fn=compare,
          inputs=[large, small, batch_norm], outputs=[large_heading, large_table, small_heading, small_table],
          api_name=False)
    # Picking a variant of the pair looks at it closer below, and the custom size starts at its own size.
    for choice in (large, small):
        choice.input(lambda name: (name, own_size(name)), inputs=choice, outputs=[model, custom_size],
                     api_name=False)
    model.input(own_size, inputs=model, outputs=custom_size, api_name=False)
    gr.on(
        triggers=[app.load, model.change, custom_size.change, batch_norm.change],
        fn=architecture,
        inputs=[model, custom_size, batch_norm],
        outputs=[variant_text, *tables, custom_totals, plot],
        api_name="summary",
        trigger_mode="always_last",
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


TRAINING_CAPS = TrainingCaps.from_env()
# A Hugging Face Space sets SPACE_ID: the server is public, and strangers share it.
ON_SPACE = bool(os.environ.get("SPACE_ID"))


SHARING = SharingLimits.from_env()
RUNNER.max_active = SHARING.runs_at_once


# --- Visitors: who started a run, made an upload, brought a checkpoint -------------------------------------

VISITORS_DIR = STUDIO_HOME / "visitors"
_VISITOR_ID = re.compile(r"[0-9a-f]{32}")


def remember_visitor(saved: str | None) -> tuple[str, str]:
    """On page load: the visitor's id as their browser keeps it (gr.BrowserState), or a new random one for a
    first visit; a reload therefore finds the same runs and uploads. Returns it for the page's gr.State and
    for the browser to keep."""
    visitor = saved if isinstance(saved, str) and _VISITOR_ID.fullmatch(saved) else secrets.token_hex(16)
    return visitor, visitor


def owner_of(visitor: str | None, request: gr.Request | None = None) -> str:
    """Whose work this is: the page's visitor id; for an API client, which has no browser, its session (one
    gradio_client.Client is one visitor); LOCAL for a direct call from Python."""
    if visitor:
        return visitor
    if request is not None and getattr(request, "session_hash", None):
        return f"session-{request.session_hash}"
    return LOCAL


def visitor_folder(owner: str) -> Path | None:
    """Where a visitor's runs, uploads and checkpoints go (a hash of their id: any id makes a safe name);
    None for LOCAL, whose runs and uploads are the server's own (RUNS_DIR, UPLOADS_DIR)."""
    if owner == LOCAL:
        return None
    return VISITORS_DIR / hashlib.sha256(owner.encode()).hexdigest()[:24]


def _runs_dir(owner: str) -> Path:
    folder = visitor_folder(owner)
    return RUNS_DIR if folder is None else folder / "runs"


def _uploads_dir(owner: str) -> Path:
    folder = visitor_folder(owner)
    return UPLOADS_DIR if folder is None else folder / "uploads"


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def _uploaded_bytes(owner: str | None = None) -> int:
    """The disk that uploads take: one visitor's (data sets and checkpoints), or every visitor's."""
    if owner is None:
        return sum(_uploaded_bytes_of(folder) for folder in VISITORS_DIR.glob("*") if folder.is_dir())
    folder = visitor_folder(owner)
    return _uploaded_bytes_of(folder) if folder is not None else 0


def _uploaded_bytes_of(folder: Path) -> int:
    return _folder_bytes(folder / "uploads") + _folder_bytes(folder / "checkpoints")


def _upload_room(owner: str) -> int | None:
    """How many more bytes this visitor may upload (None: no bound); gr.Error when there is no room."""
    rooms = []
    if SHARING.upload_mb_per_visitor:
        rooms.append(SHARING.upload_mb_per_visitor * 10**6 - _uploaded_bytes(owner))
    if SHARING.upload_mb_per_server:
        rooms.append(SHARING.upload_mb_per_server * 10**6 - _uploaded_bytes())
    room = min(rooms) if rooms else None
    if room is not None and room <= 0:
        raise gr.Error("There is no room for more uploads on this server: its upload space (stated in the Train "
                       "tab) is full. Train on a built-in data set, or run AlexNet Studio on your own machine.")
    return room


def _run_count(owner: str | None = None) -> int:
    if owner is not None:
        folder = _runs_dir(owner)
        return sum(1 for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else 0
    return sum(1 for p in VISITORS_DIR.glob("*/runs/*") if p.is_dir())


def data_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """Built-in sources, the shared folders where present, the server's own data sets (folders in UPLOADS_DIR)
    and the visitor's uploads: each visitor sees their own uploads, nobody else's."""
    choices = list(BUILTIN_DATA)
    for name in ("cifar10", "flowers5"):
        if (SHARED_DATA / name).is_dir():
            choices.append((f"Shared folder: {name}", str(SHARED_DATA / name)))
    folders = [UPLOADS_DIR] + ([_uploads_dir(owner)] if owner != LOCAL else [])
    for uploads in folders:
        if uploads.is_dir():
            for folder in sorted(p for p in uploads.iterdir() if p.is_dir()):
                choices.append((f"Uploaded: {folder.name}", str(dataset_root(folder))))
    return choices


def recipe_values(recipe: str) -> list:
    """The hyper-parameter fields as a recipe sets them (defaults for what it leaves out)."""
    config = TrainConfig.from_dict(RECIPES.get(recipe, {}))
    return [getattr(config, name) for name in HYPER_FIELDS]


def _file_name(path: str) -> str:
    """The user's name for an upload: Gradio keeps it as the cached file's name."""
    return Path(path).name


def upload_dataset(zip_file: str | None, visitor: str | None = None, request: gr.Request = None,
                   progress: gr.Progress = gr.Progress()) -> tuple[gr.Dropdown, gr.Dropdown, str]:
    """Unpacks an uploaded ImageFolder zip into the visitor's uploads, checks it whole, and selects it as the
    Train and Evaluate tabs' data; gr.Error with one sentence for a zip that cannot be used (nothing is kept)."""
    if not zip_file:
        return gr.Dropdown(), gr.Dropdown(), ""
    owner, name = owner_of(visitor, request), _file_name(zip_file)
    room = _upload_room(owner)
    dest = _uploads_dir(owner) / f"{Path(name).stem[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        progress(0, desc=f"Unpacking {name}…")
        root = extract_zip(zip_file, dest, label=name, max_total_bytes=min(MAX_TOTAL_BYTES, room or MAX_TOTAL_BYTES))
        progress(0.5, desc=f"Checking every image in {name}…")
        classes, removed = check_dataset(root, label=name)
    except UploadError as error:
        shutil.rmtree(dest, ignore_errors=True)
        raise gr.Error(str(error)) from None
    if removed:
        gr.Warning(f"{len(removed)} file{'s' * (len(removed) != 1)} in {name} {'are' if len(removed) != 1 else 'is'}"
                   f" not a readable image and {'were' if len(removed) != 1 else 'was'} left out: "
                   f"{', '.join(removed[:5])}{'…' if len(removed) > 5 else ''}.")
    choices = data_choices(owner)
    return (gr.Dropdown(choices=choices, value=str(root)), gr.Dropdown(choices=choices, value=str(root)),
            f"Unpacked {len(classes)} classes: {', '.join(classes[:10])}{'…' if len(classes) > 10 else ''}. "
            f"{name} is now in the Data lists of Train and Evaluate (for you only).")


def _start_run(owner: str, model: str, data: str, device: str, limit: float | None, epochs: float,
               batch_size: float, lr: float, optimizer: str, momentum: float, weight_decay: float, schedule: str,
               label_smoothing: float, batch_norm: bool, whiten: bool = False) -> None:
    """Checks the form and the server's bounds, then starts ``owner``'s run (the library's errors pass on)."""
    from alexnet_core.config import config_from_form  # one sentence per field of the wrong type or empty

    if SHARING.runs_per_visitor and _run_count(owner) >= SHARING.runs_per_visitor:
        raise ValueError(f"You have made {SHARING.runs_per_visitor} runs, as many as this server keeps per "
                         f"visitor: download the checkpoints you want to keep; the server forgets runs when it "
                         f"restarts.")
    if SHARING.runs_per_server and _run_count() >= SHARING.runs_per_server:
        raise ValueError(f"This server holds {SHARING.runs_per_server} runs, as many as it keeps: try again after "
                         f"it restarts, or train on your own machine.")
    config = config_from_form(
        model=model, data=data, device=device or "auto", limit=limit or None,
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
        momentum=momentum, weight_decay=weight_decay, schedule=schedule,
        label_smoothing=label_smoothing, batch_norm=bool(batch_norm), whiten=bool(whiten),
        out=str(_runs_dir(owner) / f"{model}-{Path(data).name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    capped = TRAINING_CAPS.apply(config)
    # RUNNER.start checks the settings and the memory they need (one sentence, before any work).
    RUNNER.start(capped, owner)
    if capped.limit != config.limit:  # the run goes on, within the server's cap: say so, without stopping it
        gr.Warning(f"This server trains on at most {capped.limit:,} images per split; your run uses that many.")


def start_training(model: str, data: str, device: str, limit: float | None, epochs: float, batch_size: float,
                   lr: float, optimizer: str, momentum: float, weight_decay: float, schedule: str,
                   label_smoothing: float, batch_norm: bool, whiten: bool = False, visitor: str | None = None,
                   request: gr.Request = None) -> str:
    """Starts the visitor's run in the background and says so; gr.Error with the sentence that says why not
    (a setting, a cap, their run already going, the server's runs all taken)."""
    try:
        _start_run(owner_of(visitor, request), model, data, device, limit, epochs, batch_size, lr, optimizer,
                   momentum, weight_decay, schedule, label_smoothing, batch_norm, whiten)
    except (BusyError, ValueError, TypeError) as error:
        raise gr.Error(for_the_page(str(error))) from None
    return STARTED


STARTED = "Started: loading the data…"
TRAINING_QUEUE = "training"  # the concurrency id of the training event: its own queue and limit
# How often a page that follows a run gets a new status and new plots.
FOLLOW_SECONDS = 1.0


async def train(model: str, data: str, device: str, limit: float | None, epochs: float, batch_size: float,
                lr: float, optimizer: str, momentum: float, weight_decay: float, schedule: str,
                label_smoothing: float, batch_norm: bool, whiten: bool = False, visitor: str | None = None,
                request: gr.Request = None):
    """The Train tab's Start, as a queued event: starts the visitor's run and streams its status and plots
    until it ends (then the best checkpoint, to download). The event's concurrency limit is the server's
    runs at once, so a second visitor's Start waits in Gradio's queue; should a run still be training whose
    page has gone (the run outlives its page), this one waits for it here."""
    owner = owner_of(visitor, request)
    fields = (model, data, device, limit, epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule,
              label_smoothing, batch_norm, whiten)
    try:
        while True:
            try:
                _start_run(owner, *fields)
                break
            except ServerBusyError:
                if owner not in _WAITING:
                    _WAITING.append(owner)
                yield line_notice(_WAITING.index(owner) + 1), gr.update(), gr.update(), None
                await asyncio.sleep(FOLLOW_SECONDS)
            except (BusyError, ValueError, TypeError) as error:
                raise gr.Error(for_the_page(str(error))) from None
    finally:
        if owner in _WAITING:
            _WAITING.remove(owner)
    async for outputs in follow_training(owner):
        yield outputs


# Visitors whose training event holds a place in the queue but waits for a run whose page has gone to end.
_WAITING: list[str] = []


def line_notice(position: int) -> str:
    return (f"⏳ Another visitor's run is training (this server trains {RUNNER.max_active} at a time). Yours is "
            f"number {position} in line and starts by itself when it is its turn; keep this page open. "
            f"Stop leaves the line.")


async def follow_training(visitor: str | None = None, request: gr.Request = None):
    """The visitor's run as it goes: its status and plots about every second while it trains, then once more
    when it has ended; once only when it is not going. A page follows only its own run, and a page with no
    run going sends nothing."""
    owner = owner_of(visitor, request)
    while True:
        snapshot = RUNNER.snapshot(owner)
        yield training_view(snapshot)
        if not snapshot.active:
            return
        await asyncio.sleep(FOLLOW_SECONDS)


async def follow_stopping(said: str, visitor: str | None = None, request: gr.Request = None):
    """After Stop: the visitor's run followed to its end (it may have ended already: then once); no change when
    Stop found none going, so that its sentence stays on the page."""
    if said == NO_RUN_GOING:
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return
    async for view in follow_training(visitor, request):
        yield view


def queue_notice(visitor: str | None = None, request: gr.Request = None) -> str | dict:
    """Runs before Start's queued event: refuses a second run of one's own, and tells a visitor plainly that
    their run waits, and where they are in line, when the server's runs are all taken."""
    owner = owner_of(visitor, request)
    if RUNNER.snapshot(owner).active:
        raise gr.Error("Your training run is already going: stop it or wait for it to finish.")
    waiting = _waiting_runs() + len(_WAITING)
    if RUNNER.active_count() < RUNNER.max_active and not waiting:
        return gr.update()
    return line_notice(waiting + 1)


_APPS: list[gr.Blocks] = []  # the apps built in this process: their queues say who waits to train


def _waiting_runs() -> int:
    """How many Start events wait in the training queue of the app(s) this process serves."""
    waiting = 0
    for app in _APPS:
        queue = getattr(getattr(app, "_queue", None), "event_queue_per_concurrency_id", {}).get(TRAINING_QUEUE)
        waiting += len(queue.queue) if queue is not None else 0
    return waiting



NO_RUN_GOING = "No run of yours is going."


def stop_training(visitor: str | None = None, request: gr.Request = None) -> str:
    """Stops the visitor's own run (nobody else's); its page's training event is cancelled with it."""
    return "Stopping after this step…" if RUNNER.stop(owner_of(visitor, request)) else NO_RUN_GOING


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60:02d} s"


LOSS_CURVES = ("train (per step)", "validation")
ACCURACY_CURVES = ("train", "validation")


def _curves_frame(rows: list[dict] | None, x: str, y: str, curves: tuple[str, ...]) -> pd.DataFrame:
    """A chart's rows with typed columns, and one empty (NaN) row for each curve that has no value yet.

    Typed, empty or not: an untyped empty frame makes the plot's axes categorical for good (every loss value its
    own label and no line). The NaN rows, which Vega leaves out, name every curve from the first frame on:
    Gradio's LinePlot fixes its colours to the curves in the first data it draws and never adds one, so a curve
    missing then would never be drawn."""
    rows = list(rows or [])
    present = {row["curve"] for row in rows}
    rows += [{x: 0, y: float("nan"), "curve": curve} for curve in curves if curve not in present]
    return pd.DataFrame(rows, columns=[x, y, "curve"]).astype({x: "int64", y: "float64", "curve": "object"})


def _loss_frame(rows: list[dict] | None = None) -> pd.DataFrame:
    return _curves_frame(rows, "step", "loss", LOSS_CURVES)


def _accuracy_frame(rows: list[dict] | None = None) -> pd.DataFrame:
    return _curves_frame(rows, "epoch", "accuracy", ACCURACY_CURVES)


def for_the_page(message: str) -> str:
    """A message from the library, as a visitor of the page should read it: files under the app's folders by
    their names, not server paths; what to do in the browser, not on the command line."""
    for root in sorted({VISITORS_DIR, UPLOADS_DIR, RUNS_DIR, STUDIO_HOME}, key=lambda p: -len(str(p))):
        message = re.sub(re.escape(str(root)) + r"[^\s,;:()]*", lambda m: Path(m.group()).name or m.group(),
                         message)
    return message.replace("; --resume continues the run.",
                           ": download it below, or use it in Predict, Evaluate and Inside.")


def training_view(s: RunSnapshot) -> tuple[str, pd.DataFrame, pd.DataFrame, str | None]:
    """A run's state in words, its loss and accuracy curves, and its best checkpoint once it has ended."""
    if s.status == "idle":
        text = "No run yet. Pick a model and data, then Start."
    else:
        lines = [f"**{s.status.capitalize()}** · {for_the_page(s.message)}"]
        if s.total_steps:
            percent = 100 * s.step / s.total_steps
            lines.append(f"Step {s.step:,} / {s.total_steps:,} ({percent:.0f}%) · epoch {s.epoch} / {s.epochs}"
                         f" · {s.images_per_s:,.0f} images/s · {_duration(s.eta_s)} left")
        if s.best_val_acc is not None:
            lines.append(f"Best validation accuracy {s.best_val_acc:.1%}"
                         + (f" · checkpoint of run `{Path(s.best_path).parent.name}`: download it below; Predict, "
                            f"Evaluate and Inside list it for you" if s.best_path else ""))
        text = "\n\n".join(lines)
    train_loss, val_loss = LOSS_CURVES
    loss = _loss_frame([{"step": step, "loss": value, "curve": train_loss} for step, value in s.steps]
                       + [{"step": h["step"], "loss": h["val_loss"], "curve": val_loss} for h in s.history])
    accuracy = _accuracy_frame([{"epoch": h["epoch"], "accuracy": h[key], "curve": label} for h in s.history
                                for key, label in zip(("train_acc", "val_acc"), ACCURACY_CURVES)])
    best = s.best_path if not s.active and s.best_path and Path(s.best_path).is_file() else None
    return text, loss, accuracy, best


def training_status(visitor: str | None = None, request: gr.Request = None
                    ) -> tuple[str, pd.DataFrame, pd.DataFrame, str | None]:
    """The caller's own run, once (the API's /train_status; the page follows its run with follow_training)."""
    return training_view(RUNNER.snapshot(owner_of(visitor, request)))


def _train_tab(app: gr.Blocks, visitor: gr.State, visited: gr.Dependency) -> tuple[gr.Dropdown, gr.File, gr.Markdown]:
    defaults = TrainConfig(model="alexnet_cifar_small")
    with gr.Tab("Train", id="train"):
        caps = TRAINING_CAPS.describe()
        gr.Markdown(f"ℹ️ {' '.join(filter(None, [caps, SHARING.describe()]))}", elem_id="training-caps")
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
            loss_plot = gr.LinePlot(_loss_frame(), x="step", y="loss", color="curve", title="Loss", height=300)
            acc_plot = gr.LinePlot(_accuracy_frame(), x="epoch", y="accuracy", color="curve", title="Accuracy",
                                   height=300, y_lim=[0, 1])
        download = gr.DownloadButton("Download the best checkpoint (.safetensors)", value=None)

    hyper = [epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, label_smoothing, batch_norm,
             whiten]
    recipe.change(lambda r: recipe_values(r) if r != "custom" else [gr.update()] * len(hyper),
                  inputs=recipe, outputs=hyper, api_name=False)
    outputs = [status, loss_plot, acc_plot, download]
    started = start.click(queue_notice, inputs=visitor, outputs=status, api_name=False, show_progress="hidden")
    training = started.success(train, inputs=[model, data, device, limit, *hyper, visitor], outputs=outputs,
                               api_name="train", concurrency_limit=SHARING.runs_at_once,
                               concurrency_id=TRAINING_QUEUE, show_progress="minimal")
    # Once the page knows its visitor: their run, followed if it is going (a reload reconnects so).
    following = visited.then(follow_training, inputs=visitor, outputs=outputs, api_name=False,
                             show_progress="hidden", concurrency_limit=None)
    stop.click(stop_training, inputs=visitor, outputs=status, api_name="train_stop", cancels=[training, following]
               ).then(follow_stopping, inputs=[status, visitor], outputs=outputs, api_name=False,
                      show_progress="hidden", concurrency_limit=None)
    gr.on([], training_status, inputs=visitor, outputs=outputs, api_name="train_status")
    return data, zip_file, upload_note


# --- Checkpoints, wherever they are -------------------------------------------------------------------

SHIPPED_DIR = REPO / "checkpoints"
# What /predict uses when the caller names no checkpoint.
DEFAULT_CHECKPOINT = SHIPPED_DIR / "cifar10.safetensors"
NO_CHECKPOINT = ("⚠️ There is no checkpoint yet: train one in the Train tab (it appears here when it "
                 "finishes), or put one in checkpoints/.")


def checkpoint_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """(label, path) of every checkpoint this visitor may use: the shipped ones first; then, on a private server,
    the runs in runs/ (this app's and ./runs); then the visitor's own runs and uploaded checkpoints. On a Space,
    nobody sees another visitor's runs."""
    dirs = [SHIPPED_DIR]
    if not ON_SPACE:
        dirs += [Path.cwd() / "runs", RUNS_DIR]
    folder = visitor_folder(owner)
    if folder is not None:
        dirs += [folder / "runs", folder / "checkpoints"]
    found = list_checkpoints(*dirs)
    found.sort(key=lambda info: not info.path.resolve().is_relative_to(SHIPPED_DIR.resolve()))  # stable
    return [(info.name, str(info.path)) for info in found]


def default_checkpoint() -> str | None:
    """The CIFAR-10 checkpoint where it is shipped, else the first one listed, else None."""
    if DEFAULT_CHECKPOINT.is_file():
        return str(DEFAULT_CHECKPOINT)
    choices = checkpoint_choices()
    return choices[0][1] if choices else None


# torchvision's ImageNet AlexNet, offered in Predict and Inside beside the checkpoints (downloaded on first use).
IMAGENET = "imagenet:alexnet_torchvision"
IMAGENET_LABEL = (f"ImageNet · 1,000 classes · {imagenet.TOP1}% top-1 · torchvision's AlexNet "
                  f"({imagenet.DOWNLOAD_MB} MB, downloaded on first use)")


def model_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """Predict's and Inside's list: the visitor's checkpoints, then the ImageNet AlexNet."""
    return checkpoint_choices(owner) + [(IMAGENET_LABEL, IMAGENET)]


def _predictor(choice: str):
    """The Predictor for a checkpoint path or for IMAGENET (whose first use downloads its weights)."""
    if choice == IMAGENET:
        return imagenet.imagenet_predictor(PREDICT_DEVICE)
    return get_predictor(choice, PREDICT_DEVICE)


def knows_line(classes: list[str], shown: int = 12) -> str:
    """What a model can answer, in one line: every class it knows (the first few of a long list), and that any
    other photo still gets one of them."""
    names = ", ".join(classes[:shown]) + (f", … and {len(classes) - shown:,} more" if len(classes) > shown else "")
    return f"**Knows {len(classes):,} classes:** {names}; any other photo gets the nearest of them."


def _refreshed(choices: list[tuple[str, str]], current: str | None) -> gr.Dropdown:
    """A checkpoint list as it is now (a run may have finished), keeping the selection where it still exists."""
    return gr.Dropdown(choices=choices, value=current if current in dict(choices).values() else default_checkpoint())


def refresh_predict_choices(current: str | None, visitor: str | None = None, request: gr.Request = None
                            ) -> gr.Dropdown:
    """Predict's list: the visitor's checkpoints and the ImageNet AlexNet."""
    return _refreshed(model_choices(owner_of(visitor, request)), current)


def refresh_checkpoints(current: str | None, visitor: str | None = None, request: gr.Request = None) -> gr.Dropdown:
    """Evaluate's list: the visitor's checkpoints."""
    return _refreshed(checkpoint_choices(owner_of(visitor, request)), current)


NOT_LISTED = ("That checkpoint is not in the list of choices: pick one from the Checkpoint list (your runs and "
              "uploaded checkpoints are there), or upload it in the Predict tab.")


def _listed_checkpoint(checkpoint: str | None, owner: str, choices: list[tuple[str, str]] | None = None) -> str | None:
    """The checkpoint to use: the one asked for if this visitor's list has it (checked here, not by the dropdown,
    so that a run that ended since the page loaded can be used at once), else the default; gr.Error otherwise.
    A direct call from Python (LOCAL) may name any file, as the command line may."""
    if not checkpoint:
        return default_checkpoint()
    listed = choices if choices is not None else checkpoint_choices(owner)
    if owner != LOCAL and checkpoint not in {path for _, path in listed}:
        raise gr.Error(NOT_LISTED)
    return checkpoint


# A checkpoint a visitor brings: read without unpickling (safetensors) and refused above this size.
MAX_CHECKPOINT_BYTES = 400 * 10**6  # the paper's AlexNet in float32 is 250 MB


def upload_checkpoint(file: str | None, visitor: str | None = None, request: gr.Request = None) -> gr.Dropdown:
    """Keeps a .safetensors checkpoint made by AlexNet Studio among the visitor's checkpoints (Predict, Inside
    and Evaluate list it for them) and selects it; gr.Error with one sentence for a file that is not one."""
    from alexnet_core.checkpoints import CheckpointError
    from alexnet_core.predict import Predictor

    if not file:
        return gr.Dropdown()
    owner, name = owner_of(visitor, request), _file_name(file)
    size = os.path.getsize(file)
    if not name.lower().endswith(".safetensors"):
        raise gr.Error(f"{name} is not a .safetensors file: upload a checkpoint that AlexNet Studio made "
                       f"(best.safetensors, from the Train tab's download button).")
    if size > MAX_CHECKPOINT_BYTES:
        raise gr.Error(f"{name} is {size / 10**6:,.0f} MB; checkpoints of at most {MAX_CHECKPOINT_BYTES // 10**6} MB "
                       f"are accepted.")
    room = _upload_room(owner)
    if room is not None and size > room:
        raise gr.Error(f"{name} ({size / 10**6:,.0f} MB) does not fit in your room for uploads on this server "
                       f"({max(room, 0) / 10**6:,.0f} MB left).")
    try:
        Predictor.from_checkpoint(file)  # reads the header and the tensors (safetensors: no code runs), builds the net
    except (CheckpointError, ValueError, OSError) as error:
        reason = str(error).replace(file, name).replace(str(Path(file).parent) + os.sep, "")
        raise gr.Error(f"{name} is not a checkpoint AlexNet Studio can use: {reason}") from None
    folder = visitor_folder(owner)
    target_dir = (folder / "checkpoints") if folder is not None else UPLOADS_DIR / "checkpoints"
    target = target_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9._-]', '_', name)[-80:]}"
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    gr.Info(f"{name} is now in your Checkpoint lists (Predict, Evaluate, Inside).")
    return gr.Dropdown(choices=model_choices(owner), value=str(target))  # Predict's list


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
    """A gr.Image that checks every image's size from its header before anything decodes it, whichever way it
    came (upload, URL, data: URL, webcam, paste, API): Gradio decodes a data: URL, and turns an EXIF-rotated
    photo, in full before a handler runs. It then passes PIL images on in their own mode (decode_image handles
    every mode; Gradio's RGB conversion would drop transparency and clip 16-bit images), and hands a file Pillow
    cannot open to the handler as is, so that the user reads decode_image's sentence rather than a bare "Error".
    (Wrapped per instance: a gr.Image subclass would make Gradio write a .pyi file here.)"""
    image = gr.Image(type="pil", image_mode=None, **options)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        if payload is None:
            return None
        name = payload.orig_name or (Path(payload.path).name if payload.path else "The image")
        data_url = payload.url if payload.url and payload.url.startswith("data:") else None
        source = _data_url_bytes(data_url, name) if data_url else payload.path
        _check_image_header(source, name)
        try:
            return gradio_preprocess(payload)
        # Pillow's errors for what is not an image
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return source

    image.preprocess = preprocess
    return image


def _data_url_bytes(url: str, name: str) -> bytes:
    """The bytes of a data: URL, refused (gr.Error) when there would be more than an image may have."""
    import base64
    import binascii
    import urllib.parse

    head, _, body = url.partition(",")
    if len(body) * 3 // 4 > images.MAX_IMAGE_BYTES:
        raise gr.Error(f"{name} is {len(body) * 3 / 4 / 2**20:,.0f} MiB; images of at most "
                       f"{images.MAX_IMAGE_BYTES >> 20} MiB are accepted.")
    try:
        return base64.b64decode(body) if head.endswith(";base64") else urllib.parse.unquote_to_bytes(body)
    except (binascii.Error, ValueError):
        raise gr.Error(f"{name} is a data: URL whose content is not valid base64; send the image itself.") from None


def _check_image_header(source: str | bytes | None, name: str) -> None:
    """gr.Error when the image's header (read without decoding a pixel) says it is over the app's caps: more
    than 64 megapixels or 64 MiB. What is not an image at all passes on, to get decode_image's sentence."""
    if source is None:
        return
    size = len(source) if isinstance(source, bytes) else os.path.getsize(source) if os.path.isfile(source) else 0
    if size > images.MAX_IMAGE_BYTES:
        raise gr.Error(f"{name} is {size / 2**20:,.0f} MiB; images of at most {images.MAX_IMAGE_BYTES >> 20} "
                       f"MiB are accepted.")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            pixels = opened.size
    except Image.DecompressionBombError:  # Pillow's own guard, raised by the header alone
        raise gr.Error(images.too_many_pixels(name, None)) from None
    except Exception:  # not an image: the handler says so, in decode_image's words
        return
    if pixels[0] * pixels[1] > images.MAX_IMAGE_PIXELS:
        raise gr.Error(images.too_many_pixels(name, pixels))


def _empty_bars() -> pd.DataFrame:
    # Typed columns: an untyped empty frame makes "class" numeric, and the chart then never draws the classes.
    return pd.DataFrame({"class": pd.Series([], dtype=str), "probability": pd.Series([], dtype=float)})


def _readable(error: Exception, image) -> str:
    """The error's sentence, with an uploaded file known by its name rather than Gradio's temporary path."""
    text = str(error)
    if isinstance(image, str):
        text = text.replace(image, Path(image).name)
    return for_the_page(text)


def predict_image(image: Image.Image | str | None, checkpoint: str | None = None, k: float = 5,
                  tta: str = "none", visitor: str | None = None, request: gr.Request = None,
                  progress=gr.Progress(track_tqdm=True)  # the ImageNet download's bar
                  ) -> tuple[dict | None, str, tuple[Prediction, Preprocess] | None]:
    """The top-k classes (for gr.Label) and what the model knows with the inference time; and the prediction
    with its preprocessing, kept for ``prediction_details`` (a gr.State). gr.Error with one sentence for what
    cannot be used (not an image, a bad checkpoint, k or tta)."""
    if image is None:
        return None, PREDICT_PROMPT, None
    owner = owner_of(visitor, request)
    path = _listed_checkpoint(checkpoint, owner, model_choices(owner) if checkpoint else None)
    if path is None:
        return None, NO_CHECKPOINT, None
    try:
        predictor = _predictor(path)
        prediction = predictor.predict(image, top_k=k, tta=tta)
    except ValueError as error:  # not an image, a bad checkpoint, a bad k or tta: one sentence each
        raise gr.Error(_readable(error, image)) from None
    source = "torchvision's ImageNet weights" if path == IMAGENET else f"`{Path(path).name}`"
    info = (f"{1000 * prediction.seconds:.1f} ms on {PREDICT_DEVICE} (decode, preprocess, forward, softmax) · "
            f"{TTA_LABELS[prediction.tta]} · {predictor.meta['model']} from {source}\n\n"
            f"{knows_line(predictor.classes)}")
    return dict(prediction.top_k), info, (prediction, predictor.pre)


def prediction_details(shown: tuple[Prediction, Preprocess] | None) -> tuple[pd.DataFrame, Image.Image | None]:
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


# The photos in examples/ travel with the app (credited in examples/README.md). A name that starts with a data
# set's name goes with the shipped checkpoint trained on it, so that clicking a flower selects the flowers net.
EXAMPLE_CHECKPOINTS = {"flowers5-": "flowers.safetensors", "cifar10-": "cifar10.safetensors"}


def _example_photos() -> list[list[str]]:
    """[photo, checkpoint] for each photo in examples/: its data set's shipped checkpoint where that is here,
    else the default checkpoint (a photo a user drops in goes with the default)."""
    photos = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES) \
        if EXAMPLES_DIR.is_dir() else []
    rows = []
    for photo in photos:
        own = next((SHIPPED_DIR / name for prefix, name in EXAMPLE_CHECKPOINTS.items()
                    if photo.name.startswith(prefix)), None)
        checkpoint = str(own) if own is not None and own.is_file() else default_checkpoint()
        if checkpoint is not None:
            rows.append([str(photo), checkpoint])
    return rows


def example_checkpoint(evt: gr.SelectData) -> str | gr.Dropdown:
    """The checkpoint that goes with the example photo just clicked."""
    rows = _example_photos()
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return rows[index][1] if isinstance(index, int) and 0 <= index < len(rows) else gr.Dropdown()


def _examples(image: gr.Image, checkpoint: gr.Dropdown) -> None:
    """The example photos under a photo box (a row of thumbnails); clicking one puts the photo in and selects
    the checkpoint that knows its class."""
    rows = _example_photos()
    if rows:
        examples = gr.Examples([[photo] for photo, _ in rows], inputs=image, examples_per_page=12,
                               label="Examples: click one (a flower picks the flowers checkpoint, a CIFAR-10 "
                                     "image the CIFAR-10 one)")
        examples.dataset.select(example_checkpoint, outputs=checkpoint, api_name=False)


def _predict_tab(app: gr.Blocks, visitor: gr.State) -> gr.Dropdown:
    with gr.Tab("Predict", id="predict") as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image = photo_input(sources=["upload", "webcam", "clipboard"], label="Photo")
                # Custom values: the handler checks the visitor's own list (a run may have ended since the page
                # loaded), which the dropdown's fixed choices cannot.
                checkpoint = gr.Dropdown(choices=model_choices(), value=default_checkpoint(),
                                         label="Checkpoint", allow_custom_value=True, render=False)
                _examples(image, checkpoint)
                checkpoint.render()
                with gr.Accordion("Upload a checkpoint (.safetensors made by AlexNet Studio)", open=False):
                    checkpoint_file = gr.File(label="Checkpoint", file_types=[".safetensors"], type="filepath")
                with gr.Row():
                    k = gr.Slider(1, 10, value=5, step=1, label="Top classes (k)")
                    tta = gr.Radio(list(TTA_LABELS), value="none", label="Test-time augmentation")
            with gr.Column(scale=1):
                top = gr.Label(num_top_classes=10, label="Top classes")
                info = gr.Markdown(PREDICT_PROMPT, elem_id="predict-info")
                bars = gr.BarPlot(_empty_bars(), x="class", y="probability", sort="-y", y_lim=[0, 1],
                                  title="Probability of each class", height=260, x_label_angle=-45)
                view = gr.Image(label="What the network sees (after preprocessing)", format="png",
                                interactive=False, height=260)
        # Inside the Tab: a component left directly under gr.Tabs shifts the browser's tab order by one,
        # and a later tab then takes the place of the one after it (tests/app/test_app_layout.py).
        shown = gr.State()

    tab.select(refresh_predict_choices, inputs=[checkpoint, visitor], outputs=checkpoint, api_name=False)
    checkpoint_file.upload(upload_checkpoint, inputs=[checkpoint_file, visitor], outputs=checkpoint, api_name=False)
    gr.on(
        triggers=[image.change, checkpoint.change, k.change, tta.change],
        fn=predict_image,
        inputs=[image, checkpoint, k, tta, visitor],
        outputs=[top, info, shown],
        api_name="predict",
        trigger_mode="always_last",
    ).then(prediction_details, inputs=shown, outputs=[bars, view], api_name=False, show_progress="hidden")
    return checkpoint


# --- Evaluate tab ---------------------------------------------------------------------------------------

MISTAKES_SHOWN = 12
GALLERY_MIN_SIDE = 128  # small images (CIFAR's 32) are enlarged, without smoothing, to at least this
GALLERY_MAX_SIDE = 256  # and large photos shrunk, to keep the page light


def _gallery_image(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image).convert("RGB")
    if max(image.size) > GALLERY_MAX_SIDE:
        image.thumbnail((GALLERY_MAX_SIDE, GALLERY_MAX_SIDE))
    return images.enlarge(image, GALLERY_MIN_SIDE)


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
    pre = Preprocess.from_dict(meta["preprocess"])
    split_data = studio_data.load_split(data, split, pre, val_fraction=config.get("val_fraction", 0.1),
                                        seed=config.get("seed", 0), limit=limit)
    pixels = [split_data.images[i].permute(1, 2, 0).numpy() for i in indices]
    return [_gallery_image(Image.fromarray(p[:, :, 0] if p.shape[2] == 1 else p)) for p in pixels]


def evaluate_view(checkpoint: str | None, data: str | None, split: str = "test", limit: float | None = 1000,
                  tta: str = "none", visitor: str | None = None, request: gr.Request = None,
                  progress: gr.Progress = gr.Progress()) -> tuple[str, pd.DataFrame, Figure | None, list]:
    """Accuracy in words, per-class accuracy (a table), the confusion matrix (a heat map) and the most
    confidently wrong images with their captions; gr.Error with the sentence that says what is wrong."""
    empty = pd.DataFrame(columns=["class", "accuracy", "correct", "images"])
    checkpoint = _listed_checkpoint(checkpoint, owner_of(visitor, request))
    if checkpoint is None:
        return NO_CHECKPOINT, empty, None, []
    if not data:
        raise gr.Error("Pick the data to evaluate on.")
    limit = int(limit) if limit else None
    progress(0, desc=f"Evaluating on {f'{limit:,} images' if limit else f'the whole {split} split'}…")
    try:
        result = evaluate_checkpoint(checkpoint, data, split, device=str(resolve_device("auto")), tta=tta,
                                     limit=limit)
        mistakes = result.most_confident_mistakes(MISTAKES_SHOWN)
        images = _mistake_images(result, mistakes, checkpoint, data, split, limit)
    except ValueError as error:  # wrong data for the checkpoint, a missing split, a damaged file: one sentence
        raise gr.Error(for_the_page(str(error))) from None
    counts = result.class_counts()
    table = pd.DataFrame([{"class": c, "accuracy": f"{correct / total:.1%}", "correct": correct, "images": total}
                          for c, (correct, total) in counts.items()])
    correct = sum(correct for correct, _ in counts.values())
    summary = (f"### {result.accuracy:.1%} correct\n\n{correct:,} of {result.n:,} images measured "
               f"({for_the_page(result.measured)}) · mean loss {result.loss:.3f} · test-time augmentation: {tta}")
    captions = [f"true: {result.classes[result.labels[i]]} · predicted: {result.classes[result.predictions[i]]} "
                f"{result.confidences[i]:.0%}" for i in mistakes]
    return summary, table, confusion_plot(result), list(zip(images, captions))


def _evaluate_tab(app: gr.Blocks, visitor: gr.State) -> tuple[gr.Dropdown, gr.Dropdown]:
    with gr.Tab("Evaluate", id="evaluate") as tab:
        with gr.Row():
            checkpoint = gr.Dropdown(choices=checkpoint_choices(), value=default_checkpoint(),
                                     label="Checkpoint", scale=3, allow_custom_value=True)
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
            matrix = gr.Plot(label="Confusion matrix", elem_classes=["mpl-figure"])
        gallery = gr.Gallery(label="Most confidently wrong", columns=6, height="auto", object_fit="contain")

    tab.select(refresh_checkpoints, inputs=[checkpoint, visitor], outputs=checkpoint, api_name=False)
    run.click(evaluate_view, inputs=[checkpoint, data, split, limit, tta, visitor],
              outputs=[summary, table, matrix, gallery], api_name="evaluate")
    return checkpoint, data


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


def inside_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """The visitor's checkpoints, the ImageNet AlexNet, then every variant with random weights (to compare with
    what training learnt)."""
    return model_choices(owner) + [(f"untrained {name} (random weights)", UNTRAINED + name) for name in MODELS]


@functools.lru_cache(maxsize=2)  # the paper's nets take a quarter of a second to build
def _untrained(name: str):
    from alexnet_core.explain import untrained_variant  # Grad-CAM pulls in OpenCV: not at start-up

    return untrained_variant(name)


def _inside_model(choice: str):
    """(model, metadata) for a choice; checkpoints come from Predict's cache (reloaded when the file changes)."""
    if choice.startswith(UNTRAINED):
        return _untrained(choice[len(UNTRAINED):])
    predictor = _predictor(choice)
    return predictor.model, predictor.meta


def class_choices(choice: str | None) -> gr.Dropdown:
    """The class picker for a model: "predicted class", then the model's classes."""
    try:
        classes = _inside_model(choice)[1]["classes"] if choice else []
    except ValueError:  # a broken checkpoint: explain_photo says why
        classes = []
    return gr.Dropdown(choices=[PREDICTED, *classes], value=PREDICTED)


def explain_photo(image: Image.Image | str | None, checkpoint: str | None = None, target: str | None = PREDICTED,
                  layer: str | None = None, visitor: str | None = None, request: gr.Request = None,
                  progress=gr.Progress(track_tqdm=True)  # the ImageNet download's bar
                  ) -> tuple[dict | None, Image.Image | None, Image.Image | None, list, str]:
    """Top classes, Grad-CAM over the photo, conv1's filters, a gallery of each conv layer's most active
    channels, and a line that says which class Grad-CAM explains; gr.Error with the sentence that says what is
    wrong.

    ``layer`` (e.g. "conv3", from the Architecture tab's link) opens the gallery on that layer."""
    from alexnet_core.explain import explain  # Grad-CAM pulls in OpenCV: not at start-up

    if image is None:
        return None, None, None, [], INSIDE_PROMPT
    owner = owner_of(visitor, request)
    choice = _listed_checkpoint(checkpoint, owner, inside_choices(owner) if checkpoint else None)
    if choice is None:
        return None, None, None, [], NO_CHECKPOINT
    try:
        model, meta = _inside_model(choice)
        start = time.perf_counter()
        result = explain(model, meta, image, target_class=None if target in (None, "", PREDICTED) else target)
    except ValueError as error:  # not an image, a bad checkpoint, an unknown class: one sentence each
        raise gr.Error(_readable(error, image)) from None
    info = (f"Grad-CAM explains **{result.target_name}** · {time.perf_counter() - start:.2f} s on the CPU · "
            f"{meta['model']} · each tile is one channel, normalised on its own (dark: quiet, bright: active)"
            f"\n\n{knows_line(meta['classes'])}")
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


def show_layer_inside(model: str, layer: str | None, checkpoint: str | None, image, visitor: str | None = None):
    """The Architecture tab's link: opens the Inside tab on ``layer`` of ``model`` — with a checkpoint of that
    variant where there is one, else the untrained variant — and an example photo if none is there yet."""
    if not (checkpoint and not checkpoint.startswith(UNTRAINED) and _checkpoint_model(checkpoint) == model):
        owner = owner_of(visitor)
        trained = [path for _, path in checkpoint_choices(owner) if _checkpoint_model(path) == model]
        if model == imagenet.MODEL and imagenet.is_downloaded():  # the real AlexNet, where it is already here
            trained.append(IMAGENET)
        checkpoint = trained[0] if trained else UNTRAINED + model
    if image is None:
        image = _example_for(checkpoint)
    return (gr.Tabs(selected="inside"), gr.Dropdown(choices=inside_choices(owner_of(visitor)), value=checkpoint),
            image, layer)


def _example_for(checkpoint: str) -> Image.Image | None:
    """An example photo for the Architecture tab's link: one whose class the checkpoint knows, else a flower
    (a real photo shows more in every layer than a 32x32 image), else none."""
    rows = _example_photos()
    fitting = [photo for photo, own in rows if own == checkpoint] or \
        [photo for photo, _ in rows if Path(photo).name.startswith("flowers5-")] or [photo for photo, _ in rows]
    if not fitting:
        return None
    with Image.open(fitting[0]) as opened:
        return opened.convert("RGB")


def _checkpoint_model(path: str) -> str | None:
    if path == IMAGENET:
        return imagenet.MODEL
    try:
        return read_metadata(path)["model"]
    except (ValueError, OSError):
        return None


def _inside_tab(app: gr.Blocks, visitor: gr.State) -> tuple[gr.Image, gr.Dropdown, gr.State, gr.Dependency]:
    with gr.Tab("Inside", id="inside") as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image = photo_input(label="Photo")
                checkpoint = gr.Dropdown(choices=inside_choices(), value=default_checkpoint(), label="Checkpoint",
                                         allow_custom_value=True, render=False)
                _examples(image, checkpoint)
                checkpoint.render()
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

    tab.select(lambda current, visitor: gr.Dropdown(choices=inside_choices(owner_of(visitor)), value=current),
               inputs=[checkpoint, visitor], outputs=checkpoint, api_name=False)
    checkpoint.change(class_choices, inputs=checkpoint, outputs=target, api_name=False)
    app.load(class_choices, inputs=checkpoint, outputs=target, api_name=False)
    explained = gr.on(
        triggers=[image.change, checkpoint.change, target.change, focus.change],
        fn=explain_photo,
        inputs=[image, checkpoint, target, focus, visitor],
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
        gr.Markdown("# AlexNet Studio\n**Drop a photo below, or click an example**, and a trained AlexNet says what "
                    "it shows. Then look **Inside** it, compare its layers at 224 and at 32 in **Architecture**, "
                    "or **Train** your own.", elem_id="intro")
        # Who this page's visitor is: a random id their browser keeps (encrypted, in localStorage), so that a
        # reload finds their run, uploads and checkpoints; gr.State hands it to each handler. Outside gr.Tabs.
        saved = gr.BrowserState(None, storage_key="alexnet-studio-visitor")
        visitor = gr.State(None)
        visited = app.load(remember_visitor, inputs=saved, outputs=[visitor, saved], api_name=False,
                           show_progress="hidden")
        # Predict first: a visitor classifies a photo from the first screen, on a phone too (where only the first
        # tabs fit in the bar and the rest hide behind "…").
        with gr.Tabs() as tabs:
            predict_checkpoint = _predict_tab(app, visitor)
            model, layer, look = _architecture_tab(app)
            image, checkpoint, focus, _ = _inside_tab(app, visitor)
            train_data, zip_file, upload_note = _train_tab(app, visitor, visited)
            evaluate_checkpoint_, evaluate_data = _evaluate_tab(app, visitor)
        # The Architecture tab links each layer to its activations in the Inside tab.
        look.click(show_layer_inside, inputs=[model, layer, checkpoint, image, visitor],
                   outputs=[tabs, checkpoint, image, focus], api_name=False)
        # Then the visitor's own lists (a reload included), and their run if one is going.
        visited.then(visitor_lists, inputs=visitor,
                     outputs=[train_data, evaluate_data, predict_checkpoint, evaluate_checkpoint_, checkpoint],
                     api_name=False, show_progress="hidden")
        zip_file.upload(upload_dataset, inputs=[zip_file, visitor], outputs=[train_data, evaluate_data, upload_note],
                        api_name=False)
    _APPS.append(app)
    return app


def visitor_lists(visitor: str | None):
    """The lists a visitor sees, on page load: data sets with their uploads, checkpoints with their runs and
    uploaded checkpoints. Choices only: the selections stay as they are, since a visitor may have picked an
    example (and with it a checkpoint) before this answer came."""
    owner = owner_of(visitor)
    data = data_choices(owner)
    return (gr.Dropdown(choices=data), gr.Dropdown(choices=data), gr.Dropdown(choices=model_choices(owner)),
            gr.Dropdown(choices=checkpoint_choices(owner)), gr.Dropdown(choices=inside_choices(owner)))


# How many requests of one event may run at once. Predict and Inside answer in milliseconds to a second on a
# CPU, so a few at a time keep a 2-vCPU Space responsive; the queue holds the rest in order.
CONCURRENCY = int(os.environ.get("ALEXNET_STUDIO_CONCURRENCY", "2"))
# Uploads (photos, zipped data sets) larger than this are refused by Gradio before any of our code runs.
MAX_UPLOAD = os.environ.get("ALEXNET_STUDIO_MAX_UPLOAD", "200mb")


# Phones and dark pages (tests/e2e/test_browser.py looks at both):
# - matplotlib draws on white; on a dark page its figures are inverted (hue kept), so they are dark too;
# - tables wrap long cells instead of pushing the page sideways; a figure never grows wider than its box.
CSS = """
.dark .mpl-figure img { filter: invert(0.88) hue-rotate(180deg); }
.mpl-figure img { max-width: 100%; height: auto; }
.layers { width: 100%; border-collapse: collapse; font-size: 14px; }
.layers th, .layers td { padding: 3px 6px; text-align: left; vertical-align: top; white-space: nowrap;
                         border-bottom: 1px solid var(--border-color-primary); }
.layers .num { text-align: right; font-variant-numeric: tabular-nums; }
.layers td.arith { white-space: normal; font-family: var(--font-mono); font-size: 0.9em; }
@media (max-width: 640px) { .layers { font-size: 11.5px; } .layers th, .layers td { padding: 2px 3px; } }
#intro p { margin: 0.2em 0; }
@media (max-width: 640px) {
  /* a checkbox squeezed between number fields on a phone: give it room and let the row wrap */
  .row { flex-wrap: wrap; }
  .block:has(input[type=checkbox]) { min-width: min(150px, 100%) !important; }
  /* a long accordion title wraps, and its ▼ stays inside the box */
  .label-wrap > span:not(.icon) { white-space: normal; text-align: left; flex: 1 1 auto; min-width: 0; }
  .label-wrap > .icon { flex-shrink: 0; margin-right: 6px; }  /* turned 90°, it juts out by a few pixels */
}
"""


def launch(app: gr.Blocks | None = None, **kwargs) -> gr.Blocks:
    """Queues and serves the app (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT and GRADIO_ROOT_PATH apply)."""
    app = app or build_app()
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=100)
    kwargs.setdefault("css", CSS)
    # The Train tab hands a run's best checkpoint to a DownloadButton; Gradio serves files only from folders it
    # is told of (a visitor's folder is named by a hash of their secret id, so nobody else can name it).
    kwargs.setdefault("allowed_paths", [str(VISITORS_DIR), str(RUNS_DIR)])
    app.launch(max_file_size=MAX_UPLOAD, **kwargs)
    return app


if __name__ == "__main__":
    launch()
