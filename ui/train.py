"""The Train tab: a run started, followed live (status, loss and accuracy curves) and stopped, one per visitor;
and the zipped ImageFolder data sets visitors upload to train on.

A run belongs to its visitor (alexnet_core.runner): it outlives its page, a reload follows it again, and
nobody else can see or stop it. Start is a queued event whose concurrency limit is the server's runs at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from alexnet_core import data as datasets
from alexnet_core.config import RECIPES, ConfigError
from alexnet_core.devices import available_devices
from alexnet_core.models import MODELS, get_spec
from alexnet_core.runner import LOCAL, RUNNER, BusyError, RunSnapshot, ServerBusyError
from alexnet_core.train_settings import (
    RECIPE_SETTINGS,
    SETTINGS_BY_NAME,
    TRAIN_SETTINGS,
    Setting,
    config_from_settings,
    recipe_config,
)
from alexnet_core.transfer import IMAGENET, start_settings
from alexnet_core.uploads import MAX_TOTAL_BYTES, UploadError, check_dataset, extract_zip

from . import settings
from .choices import checkpoint_choices, data_choices, default_data
from .fields import named_numbers
from .visitors import file_name, for_the_page, owner_of, run_count, runs_dir, upload_room, uploads_dir

# The form's fields, in the order its events take them: every setting of the table a page may set (the run
# folders are the command line's only). The model's field is the first.
FORM_SETTINGS = tuple(setting for setting in TRAIN_SETTINGS if setting.place != "cli")
# A setting whose default is the variant's own (BatchNorm) is a choice of three in the form.
OWN, ON, OFF = "own", "on", "off"


def own_label(model: str) -> str:
    """The first choice of the BatchNorm field: what the variant itself does."""
    return f"the model's own: {ON if model in MODELS and get_spec(model).batch_norm else OFF}"


def _to_form(setting: Setting, value):
    """A setting's value as its field shows it."""
    if setting.kind == "switch" and setting.optional:
        return OWN if value is None else ON if value else OFF
    return value


def _from_form(setting: Setting, value):
    """A field's value as the setting takes it: the three-way BatchNorm choice as None/True/False; a blank
    optional number, which the browser sends as 0, as None (where 0 is no value it may take)."""
    if setting.kind == "switch" and setting.optional:
        return {OWN: None, ON: True, OFF: False}.get(value, value)
    if setting.optional and setting.kind in ("int", "float") and value == 0 and (setting.minimum or 0) > 0:
        return None
    return value


def form_settings(recipe: str, *values) -> dict:
    """The settings object Start sends: the recipe and every field of the form, by name."""
    return {"recipe": recipe, **{setting.name: _from_form(setting, value)
                                for setting, value in zip(FORM_SETTINGS, values)}}


def recipe_values(recipe: str) -> list:
    """The form after a recipe is picked: every setting a recipe sets (RECIPE_SETTINGS) as ``--recipe`` sets it
    (its values, the defaults for the rest); what to train, on what, where and how long stay as they are."""
    config = recipe_config(recipe) if recipe != "custom" else None
    return [_to_form(setting, getattr(config, setting.name)) if config and setting.name in RECIPE_SETTINGS
            else gr.update() for setting in FORM_SETTINGS]


def upload_dataset(zip_file: str | None, visitor: str | None = None, request: gr.Request = None,
                   progress: gr.Progress = gr.Progress()) -> tuple[gr.Dropdown, gr.Dropdown, str]:
    """Unpacks an uploaded ImageFolder zip into the visitor's uploads, checks it whole, and selects it as the
    Train and Evaluate tabs' data; gr.Error with one sentence for a zip that cannot be used (nothing is kept)."""
    if not zip_file:
        return gr.Dropdown(), gr.Dropdown(), ""
    owner, name = owner_of(visitor, request), file_name(zip_file)
    room = upload_room(owner)
    dest = uploads_dir(owner) / f"{Path(name).stem[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"
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


def _start_run(owner: str, asked: dict) -> None:
    """Checks the settings object and the server's bounds, then starts ``owner``'s run (the library's errors pass
    on)."""
    if settings.SHARING.runs_per_visitor and run_count(owner) >= settings.SHARING.runs_per_visitor:
        raise ValueError(f"You have made {settings.SHARING.runs_per_visitor} runs, as many as this server keeps per "
                         f"visitor: download the checkpoints you want to keep; the server forgets runs when it "
                         f"restarts.")
    if settings.SHARING.runs_per_server and run_count() >= settings.SHARING.runs_per_server:
        raise ValueError(f"This server holds {settings.SHARING.runs_per_server} runs, as many as it keeps: try again "
                         f"after it restarts, or train on your own machine.")
    folders = [name for name in (asked if isinstance(asked, dict) else {})
               if name in SETTINGS_BY_NAME and SETTINGS_BY_NAME[name].place == "cli"]
    if folders:  # a page or an API client never names a folder on the server
        raise ConfigError(f"The setting {folders[0]} names a folder on the server: the app keeps each run in your "
                          f"own folder; leave it out.")
    start = asked.get("start_from") if isinstance(asked, dict) else None
    if start and start not in dict(start_choices(owner)).values():  # a page never names a server's files
        raise ConfigError("Start from must be imagenet or a checkpoint in your list (the shipped ones and your "
                          "runs), as the Predict tab lists them.")
    config, _ = config_from_settings(asked)
    config = dataclasses.replace(config, device=config.device or "auto", out=str(
        runs_dir(owner) / f"{config.model}-{Path(str(config.data)).name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    capped = settings.TRAINING_CAPS.apply(config)
    # RUNNER.start checks the settings and the memory they need (one sentence, before any work).
    RUNNER.start(capped, owner)
    if capped.limit != config.limit:  # the run goes on, within the server's cap: say so where it cut a split
        shortened = _shortened_splits(config, capped.limit)
        if shortened:
            gr.Warning(f"This server trains on at most {capped.limit:,} images per split: your run uses "
                       f"{shortened}.")


def _shortened_splits(config, cap: int) -> str:
    """The splits the images cap shortened, as "20 of its 48 training images and …"; empty when it cut none."""
    split = dict(val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed)
    full = datasets.split_sizes(config.data, limit=config.limit, **split)
    used = datasets.split_sizes(config.data, limit=cap, **split)
    return " and ".join(f"{n:,} of its {whole:,} {name} images"
                        for name, n, whole in zip(("training", "validation"), used, full) if n < whole)


def start_training(asked: dict, visitor: str | None = None, request: gr.Request = None) -> str:
    """Starts the visitor's run in the background and says so; gr.Error with the sentence that says why not
    (a setting, a cap, their run already going, the server's runs all taken)."""
    try:
        _start_run(owner_of(visitor, request), asked)
    except (BusyError, ValueError, TypeError) as error:
        raise gr.Error(for_the_page(str(error))) from None
    return STARTED


STARTED = "Started: loading the data…"
TRAINING_QUEUE = "training"  # the concurrency id of the training event: its own queue and limit
# How often a page that follows a run gets a new status and new plots.
FOLLOW_SECONDS = 1.0


async def train(asked: dict, visitor: str | None = None, request: gr.Request = None):
    """The Train tab's Start, as a queued event: starts the visitor's run with the settings object ``asked``
    (the form's, or an API client's: any setting left out takes the recipe's value, then the default) and
    streams its status and plots until it ends (then the best checkpoint, to download). The event's concurrency
    limit is the server's runs at once, so a second visitor's Start waits in Gradio's queue; should a run still
    be training whose page has gone (the run outlives its page), this one waits for it here."""
    owner = owner_of(visitor, request)
    try:
        while True:
            try:
                _start_run(owner, asked)
                break
            except ServerBusyError:
                if owner not in _WAITING:
                    _WAITING.append(owner)
                yield line_notice(_WAITING.index(owner) + 1), gr.update(), gr.update(), gr.update()
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


def training_view(s: RunSnapshot) -> tuple[str, pd.DataFrame, pd.DataFrame, dict]:
    """A run's state in words, its loss and accuracy curves, and the download of its best checkpoint once it has
    ended (named after the run; the button is disabled while there is none)."""
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
    # An update, not a DownloadButton: a component made here would copy the checkpoint into Gradio's cache at once.
    return text, loss, accuracy, gr.update(value=named_download(best) if best else None, interactive=bool(best))


def named_download(best_path: str) -> str:
    """A run's best checkpoint under its run's name, ``<run name>-best.safetensors``, which the download
    keeps: a hard link (no second copy on disk where the file system allows one) in the downloads folder beside
    the owner's runs folder, where no checkpoint list looks."""
    best = Path(best_path)
    run = best.parent.name
    target = best.parent.parent.parent / "downloads" / f"{run}-best.safetensors"
    if target.is_file() and target.samefile(best):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    staging.unlink(missing_ok=True)
    try:
        os.link(best, staging)
    except OSError:  # a file system without hard links: a copy
        shutil.copy2(best, staging)
    os.replace(staging, target)  # in one step: a download never finds a half-made file
    return str(target)


def training_status(visitor: str | None = None, request: gr.Request = None
                    ) -> tuple[str, pd.DataFrame, pd.DataFrame, dict]:
    """The caller's own run, once (the API's /train_status; the page follows its run with follow_training)."""
    return training_view(RUNNER.snapshot(owner_of(visitor, request)))


def form_of_run(owner: str) -> dict:
    """The form's values for ``owner``'s run, setting by setting, as it was started (a reload shows the settings
    of the run it follows); empty when they have none."""
    config = RUNNER.snapshot(owner).config
    return {setting.name: _to_form(setting, config[setting.name]) for setting in FORM_SETTINGS} if config else {}


def fill_form(visitor: str | None = None, request: gr.Request = None) -> list:
    """On page load: the form set to the visitor's run, if they have one (otherwise left as it is)."""
    owner = owner_of(visitor, request)
    values = form_of_run(owner)
    if not values:
        return [gr.skip() for _ in FORM_SETTINGS]
    return [gr.Dropdown(choices=data_choices(owner), value=values["data"]) if setting.name == "data"
            else values[setting.name] for setting in FORM_SETTINGS]


def start_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """What a run may start from (transfer.py): random weights, the ImageNet AlexNet, the shipped checkpoints and
    the visitor's own runs."""
    return [("random weights (none)", ""), ("imagenet: torchvision's ImageNet AlexNet", IMAGENET),
            *checkpoint_choices(owner)]


def start_model(start: str | None, model: str):
    """The model field after a start is picked: the start's model (a start decides it)."""
    try:
        return start_settings(start)["model"] if start else gr.skip()
    except ConfigError:
        return gr.skip()


def _field(setting: Setting, defaults) -> gr.components.Component:
    """The form's field for a setting of the table (its label, bounds, help and default)."""
    value = _to_form(setting, getattr(defaults, setting.name))
    info = setting.help or None
    if setting.name == "model":
        return gr.Dropdown(choices=[(f"{n} — {s.title}", n) for n, s in MODELS.items()], value=value,
                           label=setting.label, scale=2)
    if setting.name == "data":
        choices = data_choices()
        return gr.Dropdown(choices=choices, value=default_data(choices), label=setting.label, scale=2)
    if setting.name == "start_from":
        return gr.Dropdown(choices=start_choices(), value="", label=setting.label, info=info)
    if setting.name == "device":
        return gr.Dropdown(choices=["auto", *available_devices()], value=value, label=setting.label, scale=1)
    if setting.kind == "choice":
        return gr.Dropdown(choices=list(setting.choices), value=value, label=setting.label, info=info)
    if setting.kind == "switch" and setting.optional:
        return gr.Radio(choices=[(own_label(defaults.model), OWN), (ON, ON), (OFF, OFF)], value=value,
                        label=setting.label, info=info)
    if setting.kind == "switch":
        return gr.Checkbox(value=value, label=setting.label, info=info)
    # An optional number has no bounds on its field: the browser sends a blank field as 0 (_from_form).
    bounds = {} if setting.optional else dict(minimum=setting.minimum, maximum=setting.maximum)
    return gr.Number(value=value, label=setting.label, info=info, precision=0 if setting.kind == "int" else None,
                     **bounds)


def tab(app: gr.Blocks, visitor: gr.State, visited: gr.Dependency) -> tuple[gr.Dropdown, gr.File, gr.Markdown]:
    """The Train tab's layout and events (``visited``: the page load that knows the visitor, after which their run
    is followed and the form shows its settings); returns its data list and the zip upload (which the page wires to
    Evaluate's list too). The form's fields come from the settings table (alexnet_core.train_settings)."""
    defaults = recipe_config(None)
    defaults.model = "alexnet_cifar_small"   # quick on a CPU
    fields: dict[str, gr.components.Component] = {}

    def fields_of(*names: str) -> None:
        for name in names:
            fields[name] = _field(SETTINGS_BY_NAME[name], defaults)

    with gr.Tab("Train", id="train"):
        caps = settings.TRAINING_CAPS.describe()
        gr.Markdown(f"ℹ️ {' '.join(filter(None, [caps, settings.SHARING.describe()]))}", elem_id="training-caps")
        with gr.Row():
            fields_of("model", "data", "device")
        with gr.Accordion("Upload an ImageFolder zip (class folders, or train/ and val/ folders)", open=False):
            zip_file = gr.File(label="Zip", file_types=[".zip"], type="filepath")
            upload_note = gr.Markdown()
        with gr.Row():
            recipe = gr.Dropdown(choices=[("Custom", "custom"), *[(name, name) for name in RECIPES]],
                                 value="custom", label="Recipe (sets the settings as --recipe does)", scale=2)
            fields_of("epochs", "limit")
        main = [s.name for s in FORM_SETTINGS if s.place == "form" and s.name not in fields]
        for row in (main[:5], main[5:]):
            with gr.Row():
                fields_of(*row)
        with gr.Accordion("More settings", open=False):
            more = [s.name for s in FORM_SETTINGS if s.place == "more"]
            for start_at in range(0, len(more), 4):
                with gr.Row():
                    fields_of(*more[start_at:start_at + 4])
        # The settings object Start sends (the API's /train takes one too): hidden, the fields show it.
        asked = gr.JSON(visible=False)
        with gr.Row():
            start = gr.Button("Start", variant="primary")
            stop = gr.Button("Stop", variant="stop")
        status = gr.Markdown("No run yet.")
        with gr.Row():
            loss_plot = gr.LinePlot(_loss_frame(), x="step", y="loss", color="curve", title="Loss", height=300)
            acc_plot = gr.LinePlot(_accuracy_frame(), x="epoch", y="accuracy", color="curve", title="Accuracy",
                                   height=300, y_lim=[0, 1])
        download = gr.DownloadButton("Download the best checkpoint (.safetensors)", value=None, interactive=False)

    form = [fields[setting.name] for setting in FORM_SETTINGS]
    named_numbers(*[field for field in form if isinstance(field, gr.Number)])
    recipe.change(recipe_values, inputs=recipe, outputs=form, api_name=False)
    model, batch_norm = fields["model"], fields["batch_norm"]
    model.change(lambda name: gr.Radio(choices=[(own_label(name), OWN), (ON, ON), (OFF, OFF)]), inputs=model,
                 outputs=batch_norm, api_name=False)
    fields["start_from"].change(start_model, inputs=[fields["start_from"], model], outputs=model, api_name=False)
    outputs = [status, loss_plot, acc_plot, download]

    def ask(visitor_id: str | None, recipe_name: str, *values, request: gr.Request = None):
        return form_settings(recipe_name, *values), queue_notice(visitor_id, request)

    started = start.click(ask, inputs=[visitor, recipe, *form], outputs=[asked, status], api_name=False,
                          show_progress="hidden")
    training = started.success(train, inputs=[asked, visitor], outputs=outputs,
                               api_name="train", concurrency_limit=settings.SHARING.runs_at_once,
                               concurrency_id=TRAINING_QUEUE, show_progress="minimal")
    # Once the page knows its visitor: the form set to their run, and the run followed if it is going (a reload
    # reconnects so).
    visited.then(fill_form, inputs=visitor, outputs=form, api_name=False, show_progress="hidden")
    following = visited.then(follow_training, inputs=visitor, outputs=outputs, api_name=False,
                             show_progress="hidden", concurrency_limit=None)
    stop.click(stop_training, inputs=visitor, outputs=status, api_name="train_stop", cancels=[training, following]
               ).then(follow_stopping, inputs=[status, visitor], outputs=outputs, api_name=False,
                      show_progress="hidden", concurrency_limit=None)
    gr.on([], training_status, inputs=visitor, outputs=outputs, api_name="train_status")
    _APPS.append(app)  # queue_notice counts the Start events waiting in its queue
    return fields["data"], zip_file, upload_note
