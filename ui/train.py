"""The Train tab: a run started, followed live (status, loss and accuracy curves) and stopped, one per visitor;
and the zipped ImageFolder data sets visitors upload to train on.

A run belongs to its visitor (alexnet_core.runner): it outlives its page, a reload follows it again, and
nobody else can see or stop it. Start is a queued event whose concurrency limit is the server's runs at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import shutil
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from alexnet_core.config import RECIPES, ConfigError
from alexnet_core.runner import RUNNER, BusyError, ServerBusyError
from alexnet_core.train_settings import (
    SETTINGS_BY_NAME,
    config_from_settings,
    recipe_config,
)
from alexnet_core.uploads import MAX_TOTAL_BYTES, UploadError, check_dataset, claimed_size, extract_zip

from . import room, settings, train_live
from .choices import data_choices, switch_choices
from .fields import named_numbers
from .train_form import (
    FORM_SETTINGS,
    field_for,
    fill_form,
    form_settings,
    own_label,
    recipe_values,
    start_choices,
    start_model,
    zero_means,
)
from .train_view import accuracy_frame, download_button, loss_frame, shortened_splits, training_view
from .visitors import (
    file_name,
    for_the_page,
    owner_of,
    run_count,
    runs_dir,
    upload_room,
    uploads_dir,
    visitor_folder,
)


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


def _start_run(owner: str, asked: dict, listed_only: bool = False, request: gr.Request = None) -> None:
    """Checks the settings object and the server's bounds, then starts ``owner``'s run (the library's errors pass
    on). ``listed_only``: the data must be in the owner's Data list (a request: an API client may send any
    string, which the page's list would not; a direct call from Python may name any folder, as the command line
    may). The per-visitor cap counts the request's identity (room.identity_of), whatever session it comes from."""
    identity = room.identity_of(request)
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
    if listed_only and config.data not in dict(data_choices(owner)).values():
        raise ConfigError(NOT_LISTED_DATA)
    config = dataclasses.replace(config, device=config.device or "auto", out=str(
        runs_dir(owner) / f"{config.model}-{Path(str(config.data)).name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    capped = settings.TRAINING_CAPS.apply(config)
    room.make_room_for_run(capped.model, capped.data, capped.out, owner)
    # RUNNER.start checks the settings and the memory they need (one sentence, before any work).
    RUNNER.start(capped, owner)
    room.claim(visitor_folder(owner), request)   # marked once the run is on: a refused run leaves nothing behind
    if capped.limit != config.limit:  # the run goes on, within the server's cap: say so where it cut a split
        shortened = shortened_splits(config, capped.limit)
        if shortened:
            gr.Warning(f"This server trains on at most {capped.limit:,} images per split: your run uses "
                       f"{shortened}.")


NOT_LISTED_DATA = ("That data is not in the list of choices: pick one from the Data list (your uploads are there), "
                   "or upload an ImageFolder zip.")


def start_training(asked: dict, visitor: str | None = None, request: gr.Request = None) -> str:
    """Starts the visitor's run in the background and says so; gr.Error with the sentence that says why not
    (a setting, a cap, their run already going, the server's runs all taken)."""
    try:
        room.check_rate(room.identity_of(request))
        _start_run(owner_of(visitor, request), asked, listed_only=request is not None, request=request)
    except (BusyError, ValueError, TypeError) as error:
        raise gr.Error(for_the_page(str(error))) from None
    return STARTED


STARTED = "Started: loading the data…"
# What a run's answer holds: the status, the two charts and the download (the API's /train and /train_status);
# the page's adds the live view's outputs (train_live.OUTPUTS).
API_WIDTH = 4
PAGE_WIDTH = API_WIDTH + len(train_live.OUTPUTS)
TRAINING_QUEUE = "training"  # the concurrency id of the training event: its own queue and limit
# How often a page that follows a run gets a new status and new plots.
FOLLOW_SECONDS = 1.0


async def train(settings: dict, visitor: str | None = None, request: gr.Request = None):
    """The Train tab's Start, as a queued event: starts the visitor's run with the settings object ``settings``
    (the form's, or an API client's, by this name: any setting left out takes the recipe's value, then the
    default; the server's limits are read as ``ui.settings`` by _start_run, not here) and
    streams its status and plots until it ends (then the best checkpoint, to download). The event's concurrency
    limit is the server's runs at once, so a second visitor's Start waits in Gradio's queue; should a run still
    be training whose page has gone (the run outlives its page), this one waits for it here."""
    async for outputs in _train(settings, owner_of(visitor, request), request, page=False):
        yield outputs


async def train_page(settings: dict, visitor: str | None = None, request: gr.Request = None):
    """Start on the page: ``train``, with the network's live view (ui/train_live.py) beside the status, both
    from the same state of the run in each answer."""
    async for outputs in _train(settings, owner_of(visitor, request), request, page=True):
        yield outputs


async def _train(settings: dict, owner: str, request: gr.Request | None, page: bool):
    width = PAGE_WIDTH if page else API_WIDTH
    try:
        room.check_rate(room.identity_of(request))
        while True:
            if owner in _LEFT_LINE:  # Stop while this event waited in line: no run starts
                _LEFT_LINE.discard(owner)
                yield LEFT_LINE, *(gr.update(),) * (width - 2), None
                return
            try:
                _start_run(owner, settings, listed_only=request is not None, request=request)
                break
            except ServerBusyError:
                if owner not in _WAITING:
                    _WAITING.append(owner)
                yield line_notice(_WAITING.index(owner) + 1), *(gr.update(),) * (width - 1)
                await asyncio.sleep(FOLLOW_SECONDS)
            except (BusyError, ValueError, TypeError) as error:
                raise gr.Error(for_the_page(str(error))) from None
    finally:
        if owner in _WAITING:
            _WAITING.remove(owner)
    async for outputs in _follow(owner, page):
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
    async for outputs in _follow(owner_of(visitor, request), page=False):
        yield outputs


async def follow_page(visitor: str | None = None, request: gr.Request = None):
    """``follow_training`` with the network's live view, as the page shows it (on load, after a reload)."""
    async for outputs in _follow(owner_of(visitor, request), page=True):
        yield outputs


async def _follow(owner: str, page: bool):
    shown = None   # the snapshot the page shows: its pictures are drawn again only when a new one comes
    while True:
        snapshot = RUNNER.snapshot(owner)
        outputs = training_view(snapshot)
        if page:
            latest = snapshot.latest.index if snapshot.latest is not None else None
            outputs = (*outputs, *train_live.live(snapshot, fresh=latest != shown or not snapshot.active))
            shown = latest
        yield outputs
        if not snapshot.active:
            return
        await asyncio.sleep(FOLLOW_SECONDS)


async def follow_stopping(said: str, visitor: str | None = None, request: gr.Request = None):
    """After Stop: the visitor's run followed to its end (it may have ended already: then once); no change when
    Stop found none going, so that its sentence stays on the page."""
    if said in (NO_RUN_GOING, LEFT_LINE):
        yield (gr.skip(),) * PAGE_WIDTH
        return
    async for view in follow_page(visitor, request):
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


def training_status(visitor: str | None = None, request: gr.Request = None
                    ) -> tuple[str, pd.DataFrame, pd.DataFrame, str | None]:
    """The caller's own run, once (the API's /train_status; the page follows its run with follow_training)."""
    return training_view(RUNNER.snapshot(owner_of(visitor, request)))


def tab(app: gr.Blocks, visitor: gr.State, visited: gr.Dependency) -> tuple[gr.Dropdown, gr.File, gr.Markdown]:
    """The Train tab's layout and events (``visited``: the page load that knows the visitor, after which their run
    is followed and the form shows its settings); returns its data list and the zip upload (which the page wires to
    Evaluate's list too). The form's fields come from the settings table (alexnet_core.train_settings)."""
    defaults = recipe_config(None)
    defaults.model = "alexnet_cifar_small"   # quick on a CPU
    fields: dict[str, gr.components.Component] = {}

    def fields_of(*names: str) -> None:
        for name in names:
            fields[name] = field_for(SETTINGS_BY_NAME[name], defaults)
            fields[name].elem_id = f"train-{name.replace('_', '-')}"   # for tests and the browser

    with gr.Tab("Train", id="train"):
        caps = settings.TRAINING_CAPS.describe()
        removal = room.REMOVED_NOTE if settings.SHARING.disk_mb_per_server else ""
        gr.Markdown(f"ℹ️ {' '.join(filter(None, [caps, settings.SHARING.describe(), removal]))}",
                    elem_id="training-caps")
        with gr.Row():
            fields_of("model", "data", "device")
        with gr.Accordion("Upload an ImageFolder zip (class folders, or train/ and val/ folders)", open=False):
            zip_file = gr.File(label="Zip", file_types=[".zip"], type="filepath")
            upload_note = gr.Markdown()
        with gr.Row():
            recipe = gr.Dropdown(choices=[("Custom", "custom"), *[(name, name) for name in RECIPES]],
                                 value="custom", label="Recipe (sets the settings as --recipe does)", scale=2,
                                 elem_id="train-recipe")
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
            loss_plot = gr.LinePlot(loss_frame(), x="step", y="loss", color="curve", title="Loss", height=300)
            acc_plot = gr.LinePlot(accuracy_frame(), x="epoch", y="accuracy", color="curve", title="Accuracy",
                                   height=300, y_lim=[0, 1])
        download = gr.DownloadButton("Download the best checkpoint (.safetensors)", value=None, interactive=False,
                                     elem_id="train-download")
        live = train_live.layout()

    form = [fields[setting.name] for setting in FORM_SETTINGS]
    named_numbers(*[field for field in form if isinstance(field, gr.Number)])
    recipe.change(recipe_values, inputs=recipe, outputs=form, api_name=False)
    # What "the model's own" is follows the model.
    model, batch_norm, input_size = fields["model"], fields["batch_norm"], fields["input_size"]
    model.change(lambda name: (gr.Radio(choices=switch_choices(own_label(name))),
                               gr.Number(info=zero_means(SETTINGS_BY_NAME["input_size"], name))),
                 inputs=model, outputs=[batch_norm, input_size], api_name=False)
    fields["start_from"].change(start_model, inputs=[fields["start_from"], model], outputs=model, api_name=False)
    outputs = [status, loss_plot, acc_plot, download]
    download.change(download_button, inputs=download, outputs=download, api_name=False, show_progress="hidden",
                    queue=False)

    def ask(visitor_id: str | None, recipe_name: str, *values, request: gr.Request = None):
        return form_settings(recipe_name, *values), queue_notice(visitor_id, request)

    started = start.click(ask, inputs=[visitor, recipe, *form], outputs=[asked, status], api_name=False,
                          show_progress="hidden")
    page_outputs = [*outputs, *(live[name] for name in train_live.OUTPUTS)]
    # show_progress hidden: the status line says where the run is (queue_notice's place in line, then its steps);
    # Gradio's "queue: 1/1" said it twice and dimmed the notice to a faint grey.
    training = started.success(train_page, inputs=[asked, visitor], outputs=page_outputs, api_name=False,
                               concurrency_limit=settings.SHARING.runs_at_once, concurrency_id=TRAINING_QUEUE,
                               show_progress="hidden")
    gr.on([], train, inputs=[asked, visitor], outputs=outputs, api_name="train",
          concurrency_limit=settings.SHARING.runs_at_once, concurrency_id=TRAINING_QUEUE)
    # Once the page knows its visitor: the form set to their run, and the run followed if it is going (a reload
    # reconnects so).
    visited.then(fill_form, inputs=visitor, outputs=form, api_name=False, show_progress="hidden")
    following = visited.then(follow_page, inputs=visitor, outputs=page_outputs, api_name=False,
                             show_progress="hidden", concurrency_limit=None)
    stop.click(stop_training, inputs=visitor, outputs=status, api_name="train_stop", cancels=[training, following]
               ).then(follow_stopping, inputs=[status, visitor], outputs=page_outputs, api_name=False,
                      show_progress="hidden", concurrency_limit=None)
    gr.on([], training_status, inputs=visitor, outputs=outputs, api_name="train_status")
    train_live.wire(live, visitor)
    _APPS.append(app)  # queue_notice counts the Start events waiting in its queue
    return fields["data"], zip_file, upload_note
