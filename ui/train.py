"""The Train tab: a run started, followed live (status, loss and accuracy curves) and stopped, one per visitor;
and the zipped ImageFolder data sets visitors upload to train on.

A run belongs to its visitor (alexnet_core.runner): it outlives its page, a reload follows it again, and
nobody else can see or stop it. Start is a queued event whose concurrency limit is the server's runs at once.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from alexnet_core.config import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig
from alexnet_core.devices import available_devices
from alexnet_core.models import MODELS
from alexnet_core.runner import RUNNER, BusyError, RunSnapshot, ServerBusyError
from alexnet_core.uploads import MAX_TOTAL_BYTES, UploadError, check_dataset, claimed_size, extract_zip

from . import room, settings
from .choices import data_choices, default_data
from .fields import named_numbers
from .visitors import file_name, for_the_page, owner_of, run_count, runs_dir, upload_room, uploads_dir, visitor_folder

# The Train tab's hyper-parameter fields, in the order the handlers take them.
HYPER_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                "label_smoothing", "batch_norm", "whiten")


def recipe_values(recipe: str) -> list:
    """The hyper-parameter fields as a recipe sets them (defaults for what it leaves out)."""
    config = TrainConfig.from_dict(RECIPES.get(recipe, {}))
    return [getattr(config, name) for name in HYPER_FIELDS]


def upload_dataset(zip_file: str | None, visitor: str | None = None, request: gr.Request = None,
                   progress: gr.Progress = gr.Progress()) -> tuple[gr.Dropdown, gr.Dropdown, str]:
    """Unpacks an uploaded ImageFolder zip into the visitor's uploads, checks it whole, and selects it as the
    Train and Evaluate tabs' data; gr.Error with one sentence for a zip that cannot be used (nothing is kept)."""
    if not zip_file:
        return gr.Dropdown(), gr.Dropdown(), ""
    owner, name = owner_of(visitor, request), file_name(zip_file)
    room_left = upload_room(owner, request)
    room.check_rate(room.identity_of(request))
    # A folder of its own, whatever the zip's name and the time: a clash can never touch another upload.
    dest = uploads_dir(owner) / f"{Path(name).stem[:40]}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    try:
        # What its headers claim, room held for it on the disk; extract_zip writes no more than that, lie or not.
        limit = min(MAX_TOTAL_BYTES, room_left or MAX_TOTAL_BYTES, claimed_size(zip_file, name) + 1)
        with room.reserved(limit, name):
            progress(0, desc=f"Unpacking {name}…")
            root = extract_zip(zip_file, dest, label=name, max_total_bytes=limit)  # cleans up after itself
    except (room.NoRoomError, UploadError) as error:
        raise gr.Error(str(error)) from None
    if Path(zip_file).resolve().is_relative_to(room.gradio_folder().resolve()):
        Path(zip_file).unlink(missing_ok=True)  # Gradio's copy of the zip is not needed any more: free its room
    try:
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
               label_smoothing: float, batch_norm: bool, whiten: bool = False, request: gr.Request = None) -> None:
    """Checks the form and the server's bounds, then starts ``owner``'s run (the library's errors pass on). The
    per-visitor cap counts the request's identity (room.identity_of), whatever session it comes from."""
    from alexnet_core.config import config_from_form  # one sentence per field of the wrong type or empty

    identity = room.claim(visitor_folder(owner), request)
    per_visitor = room.per_identity(settings.SHARING.runs_per_visitor, identity)
    if per_visitor and run_count(owner, identity) >= per_visitor:
        raise ValueError(f"You have made {per_visitor} runs, as many as this server keeps per visitor: download the "
                         f"checkpoints you want to keep; the server removes the oldest runs of visitors who have "
                         f"left when it needs the room.")
    if settings.SHARING.runs_per_server and run_count() >= settings.SHARING.runs_per_server \
            and not room.remove_oldest_run():
        raise ValueError(f"This server holds {settings.SHARING.runs_per_server} runs, as many as it keeps, and their "
                         f"visitors are still here: try again in {settings.SHARING.away_minutes:g} minutes, or train "
                         f"on your own machine.")
    config = config_from_form(
        model=model, data=data, device=device or "auto", limit=limit or None,
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
        momentum=momentum, weight_decay=weight_decay, schedule=schedule,
        label_smoothing=label_smoothing, batch_norm=bool(batch_norm), whiten=bool(whiten),
        out=str(runs_dir(owner) / f"{model}-{Path(data).name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    capped = settings.TRAINING_CAPS.apply(config)
    room.make_room_for_run(capped.model, capped.data, capped.out, owner)
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
        room.check_rate(room.identity_of(request))
        _start_run(owner_of(visitor, request), model, data, device, limit, epochs, batch_size, lr, optimizer,
                   momentum, weight_decay, schedule, label_smoothing, batch_norm, whiten, request=request)
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
        room.check_rate(room.identity_of(request))
        while True:
            if owner in _LEFT_LINE:  # Stop while this event waited in line: no run starts
                _LEFT_LINE.discard(owner)
                yield LEFT_LINE, gr.update(), gr.update(), None
                return
            try:
                _start_run(owner, *fields, request=request)
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
# Visitors who pressed Stop while their Start waited in line: their training event ends without a run.
_LEFT_LINE: set[str] = set()


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
    if said in (NO_RUN_GOING, LEFT_LINE):
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return
    async for view in follow_training(visitor, request):
        yield view


def queue_notice(visitor: str | None = None, request: gr.Request = None) -> str | dict:
    """Runs before Start's queued event: refuses a second run of one's own, and tells a visitor plainly that
    their run waits, and where they are in line, when the server's runs are all taken."""
    owner = owner_of(visitor, request)
    _LEFT_LINE.discard(owner)  # a Stop of the page's earlier wait, whose event the page cancelled, is done with
    if RUNNER.snapshot(owner).active:
        raise gr.Error("Your training run is already going: stop it or wait for it to finish.")
    waiting = _waiting_runs() + len(_WAITING)
    if RUNNER.active_count() < RUNNER.max_active and not waiting:
        return gr.update()
    return line_notice(waiting + 1)


_APPS: list[gr.Blocks] = []  # the apps built in this process: their queues say who waits to train


def _queued_owners() -> list[str]:
    """Whose Start events wait in the training queue of the app(s) this process serves (the visitor, the last
    input, or the API client's session)."""
    owners = []
    for app in _APPS:
        queue = getattr(getattr(app, "_queue", None), "event_queue_per_concurrency_id", {}).get(TRAINING_QUEUE)
        for event in list(queue.queue) if queue is not None else []:
            inputs = getattr(getattr(event, "data", None), "data", None) or [None]
            owners.append(inputs[-1] if isinstance(inputs[-1], str) and inputs[-1] else f"session-{event.session_hash}")
    return owners


def _waiting_runs() -> int:
    """How many Start events wait in the training queue of the app(s) this process serves."""
    return len(_queued_owners())


NO_RUN_GOING = "No run of yours is going."
LEFT_LINE = "You left the line: your run will not start."


def stop_training(visitor: str | None = None, request: gr.Request = None) -> str:
    """Stops the visitor's own run (nobody else's); its page's training event is cancelled with it. A Start that
    still waits in line leaves it: its event ends without starting a run."""
    owner = owner_of(visitor, request)
    if RUNNER.stop(owner):
        return "Stopping after this step…"
    if owner in _WAITING or owner in _queued_owners():
        _LEFT_LINE.add(owner)
        return LEFT_LINE
    return NO_RUN_GOING


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
    best = room.download_copy(s.best_path) if not s.active else None  # served as an attachment (ui.room)
    return text, loss, accuracy, best


def training_status(visitor: str | None = None, request: gr.Request = None
                    ) -> tuple[str, pd.DataFrame, pd.DataFrame, str | None]:
    """The caller's own run, once (the API's /train_status; the page follows its run with follow_training)."""
    return training_view(RUNNER.snapshot(owner_of(visitor, request)))


def tab(app: gr.Blocks, visitor: gr.State, visited: gr.Dependency) -> tuple[gr.Dropdown, gr.File, gr.Markdown]:
    """The Train tab's layout and events (``visited``: the page load that knows the visitor, after which their run
    is followed); returns its data list and the zip upload (which the page wires to Evaluate's list too)."""
    defaults = TrainConfig(model="alexnet_cifar_small")
    with gr.Tab("Train", id="train"):
        caps = settings.TRAINING_CAPS.describe()
        removal = room.REMOVED_NOTE if settings.SHARING.disk_mb_per_server else ""
        gr.Markdown(f"ℹ️ {' '.join(filter(None, [caps, settings.SHARING.describe(), removal]))}",
                    elem_id="training-caps")
        with gr.Row():
            model = gr.Dropdown(choices=[(f"{n} — {s.title}", n) for n, s in MODELS.items()],
                                value=defaults.model, label="Model", scale=2)
            choices = data_choices()
            data = gr.Dropdown(choices=choices, value=default_data(choices), label="Data", scale=2)
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

    named_numbers(limit, epochs, batch_size, lr, momentum, weight_decay, label_smoothing)
    hyper = [epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule, label_smoothing, batch_norm,
             whiten]
    recipe.change(lambda r: recipe_values(r) if r != "custom" else [gr.update()] * len(hyper),
                  inputs=recipe, outputs=hyper, api_name=False)
    outputs = [status, loss_plot, acc_plot, download]
    started = start.click(queue_notice, inputs=visitor, outputs=status, api_name=False, show_progress="hidden")
    training = started.success(train, inputs=[model, data, device, limit, *hyper, visitor], outputs=outputs,
                               api_name="train", concurrency_limit=settings.SHARING.runs_at_once,
                               concurrency_id=TRAINING_QUEUE, show_progress="minimal")
    # Once the page knows its visitor: their run, followed if it is going (a reload reconnects so).
    following = visited.then(follow_training, inputs=visitor, outputs=outputs, api_name=False,
                             show_progress="hidden", concurrency_limit=None)
    stop.click(stop_training, inputs=visitor, outputs=status, api_name="train_stop", cancels=[training, following]
               ).then(follow_stopping, inputs=[status, visitor], outputs=outputs, api_name=False,
                      show_progress="hidden", concurrency_limit=None)
    gr.on([], training_status, inputs=visitor, outputs=outputs, api_name="train_status")
    _APPS.append(app)  # queue_notice counts the Start events waiting in its queue
    return data, zip_file, upload_note


