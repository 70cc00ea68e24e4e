"""The "Your own classes" tab: name up to ten classes, give each photos (dropped in, picked from files or taken with
the webcam), and train a classifier of them from a trained network in about a minute, as Teachable Machine does.

The classes become the visitor's own data set (alexnet_core.own_classes: every photo checked and re-encoded, the
whole within their upload room; a refusal leaves nothing on disk). The run starts from the ImageNet AlexNet (or a
shipped checkpoint, or one of the visitor's runs), retrains the classifier only on features computed once
(alexnet_core.transfer), and is the visitor's run like any other (the Train tab follows it too). When it ends the
page shows the start, the photos per class, accuracy per class and the confusion matrix on the held-out photos, and
the new model is selected in Predict, Inside and Evaluate.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import gradio as gr

from alexnet_core import imagenet
from alexnet_core.checkpoints import read_metadata
from alexnet_core.evaluate import evaluate_checkpoint
from alexnet_core.own_classes import MAX_CLASSES, MIN_PHOTOS, make_dataset, run_name
from alexnet_core.plots import confusion_plot
from alexnet_core.runner import RUNNER, BusyError
from alexnet_core.transfer import IMAGENET, describe_provenance
from alexnet_core.uploads import UploadError

from . import room, settings
from .choices import checkpoint_choices, data_choices, inside_choices, model_choices
from .train import FOLLOW_SECONDS, TRAINING_QUEUE, _start_run, stop_training
from .visitors import checkpoint_name, for_the_page, owner_of, upload_room, uploads_dir

SHOWN_AT_FIRST = 3
IMAGENET_START = (f"torchvision's ImageNet AlexNet (classifier only: the fast path; a {imagenet.DOWNLOAD_MB} MB "
                  f"download on first use)", IMAGENET)
# Settings that give a good classifier of a few dozen photos in under a minute on a Space's 2 vCPUs, with the
# classifier only (bench/transfer.py, docs/benchmarks.md): Adam, a constant rate (the copied fc6/fc7 at a tenth),
# a fifth of the photos held out for validation, and a time limit as the last guard.
FAST_SETTINGS = dict(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", batch_size=32, epochs=30,
                     val_fraction=0.2, time_limit=45, device="cpu", half=True)


def start_choices(owner: str) -> list[tuple[str, str]]:
    """Where a visitor's run may start: the ImageNet AlexNet, the shipped checkpoints and their own runs."""
    return [IMAGENET_START, *[(f"checkpoint: {label}", path) for label, path in checkpoint_choices(owner)]]


def shipped_start() -> str | None:
    """The start offered when the ImageNet weights cannot be had: the shipped CIFAR-10 checkpoint."""
    return str(settings.DEFAULT_CHECKPOINT) if settings.DEFAULT_CHECKPOINT.is_file() else None


def _classes(values: tuple) -> list[tuple[str, list]]:
    """(name, photo files) of each class from the page's fields: name, dropped files, webcam shots, per class."""
    names, files = values[:MAX_CLASSES], values[MAX_CLASSES:]
    return [(name, [*(files[i] or [])]) for i, name in enumerate(names)]


def _free_folder(folder: Path) -> Path:
    """``folder``, or ``folder-2``, ``folder-3``… where a data set of the same classes exists already."""
    n = 1
    while (candidate := folder if n == 1 else folder.with_name(f"{folder.name}-{n}")).exists():
        n += 1
    return candidate


def add_shot(shot: str | None, files: list | None) -> tuple[list, None]:
    """The webcam's shot added to the class's photos (and the webcam cleared for the next one)."""
    if not shot:
        return gr.skip(), gr.skip()
    return [*(files or []), shot], None


OUTPUTS = ("status", "result", "matrix", "download", "start", "predict", "inside", "evaluate", "evaluate_data",
           "train_data")


def _outputs(status: str, **changed) -> tuple:
    """The handler's outputs in OUTPUTS' order: the status, the ones named, and no change to the rest."""
    return tuple(status if name == "status" else changed.get(name, gr.skip()) for name in OUTPUTS)


async def train_own_classes(visitor: str | None, start: str, retrain: str, *values, request: gr.Request = None,
                            progress: gr.Progress = gr.Progress(track_tqdm=True)):
    """Makes the visitor's classes into their data set and trains on it from ``start``, following the run; at the
    end: the start, photos per class, per-class accuracy and the confusion matrix on the held-out photos, and the
    model selected in Predict, Inside and Evaluate. One sentence (gr.Error) for anything refused, nothing kept."""
    owner = owner_of(visitor, request)
    if start not in dict((v, k) for k, v in start_choices(owner)):
        raise gr.Error("That start is not in the list: pick the ImageNet AlexNet, a shipped checkpoint or one of "
                       "your runs.")
    if RUNNER.snapshot(owner).active:
        raise gr.Error("Your training run is already going: stop it (Train tab) or wait for it to finish.")
    classes = _classes(values)
    if start == IMAGENET:
        progress(0, desc="Fetching the ImageNet AlexNet…")
        try:
            await asyncio.to_thread(imagenet.imagenet_state_dict)
        except imagenet.ImageNetUnavailable:
            shipped = shipped_start()
            yield _outputs(f"⚠️ The ImageNet AlexNet cannot be downloaded on this server, so start from a shipped "
                           f"checkpoint instead{' (selected now)' if shipped else ''}, then Train again.",
                           start=gr.update(value=shipped) if shipped else gr.skip())
            return
    names = [name.strip() for name, photos in classes if (name or "").strip() or photos]
    dest = _free_folder(uploads_dir(owner) / run_name(names))
    try:
        room.check_rate(room.identity_of(request))      # the same caps as a zip upload and a Start
        root = await asyncio.to_thread(make_dataset, classes, dest, upload_room(owner, request))
        _start_run(owner, {**FAST_SETTINGS, "data": str(root), "start_from": start, "retrain": retrain},
                   request=request)
    except (UploadError, BusyError, ValueError, TypeError) as error:
        shutil.rmtree(dest, ignore_errors=True)   # a refused run keeps no data set
        raise gr.Error(for_the_page(str(error))) from None
    data_lists = data_choices(owner)
    yield _outputs("Started: computing each photo's features once…",
                   evaluate_data=gr.Dropdown(choices=data_lists, value=str(root)),
                   train_data=gr.Dropdown(choices=data_lists, value=str(root)))
    while (snapshot := RUNNER.snapshot(owner)).active:
        done = f" · epoch {snapshot.epoch} / {snapshot.epochs}" if snapshot.epoch else ""
        yield _outputs(f"**{snapshot.status.capitalize()}** · {for_the_page(snapshot.message)}{done}")
        await asyncio.sleep(FOLLOW_SECONDS)
    if not snapshot.best_path or not Path(snapshot.best_path).is_file():
        yield _outputs(f"**{snapshot.status.capitalize()}** · {for_the_page(snapshot.message)}")
        return
    yield _finished(owner, snapshot.best_path, str(root), snapshot.message)


def _finished(owner: str, best: str, data: str, message: str):
    """The end of a run of one's own classes, all in one answer: what it started from, its photos per class,
    accuracy per class and the confusion matrix on the held-out (validation) photos, the download, and the model
    selected in Predict, Inside and Evaluate."""
    meta = read_metadata(best)
    result = evaluate_checkpoint(best, data, "val", device="cpu")
    counts = result.class_counts()
    total = {path.name: sum(1 for _ in path.iterdir()) for path in sorted((Path(data) / "train").iterdir())}
    rows = "\n".join(f"| {name} | {total[name] - held} | {held} | {correct}/{held} | {correct / held:.0%} |"
                     for name, (correct, held) in counts.items())
    text = (f"### {result.accuracy:.0%} of the {result.n} held-out photos right\n\n"
            f"{for_the_page(message)} Started from **{describe_provenance(meta.get('started_from'))}**. "
            f"The model `{Path(best).parent.name}` is now selected in Predict (webcam included), Inside and "
            f"Evaluate, for you only.\n\n"
            f"| class | training photos | held-out photos | right | accuracy |\n|---|---:|---:|---:|---:|\n{rows}")
    return _outputs(
        "**Finished.**", result=text, matrix=confusion_plot(result),
        download=gr.update(value=room.download_copy(best, checkpoint_name(best)), interactive=True),
        predict=gr.Dropdown(choices=model_choices(owner), value=best),
        inside=gr.Dropdown(choices=inside_choices(owner), value=best),
        evaluate=gr.Dropdown(choices=checkpoint_choices(owner), value=best))


def refresh_starts(current: str | None, visitor: str | None = None, request: gr.Request = None) -> gr.Dropdown:
    choices = start_choices(owner_of(visitor, request))
    return gr.Dropdown(choices=choices, value=current if current in dict((v, k) for k, v in choices) else IMAGENET)


def tab(app: gr.Blocks, visitor: gr.State, predict: gr.Dropdown, inside: gr.Dropdown, evaluate: gr.Dropdown,
        evaluate_data: gr.Dropdown, train_data: gr.Dropdown) -> None:
    """The tab's layout and events; the finished model goes into ``predict``, ``inside`` and ``evaluate``, its
    data set into the Data lists."""
    with gr.Tab("Your own classes", id="own-classes") as page:
        gr.Markdown(f"**Teach a network your own classes in about a minute.** Name 2 to {MAX_CLASSES} classes and "
                    f"give each at least {MIN_PHOTOS} photos: drop them in, pick files, or take them with the "
                    f"webcam. A fifth of each class is held out to measure the result. Your photos and model are "
                    f"yours only; the server forgets them when it restarts.", elem_id="own-intro")
        with gr.Row():
            start = gr.Dropdown(choices=start_choices("local"), value=IMAGENET, label="Start from", scale=3,
                                min_width=280, info="a trained network: its last layer is made new for your classes")
            retrain = gr.Radio([("the classifier only (fast)", "classifier"), ("every layer (slower)", "all")],
                               value="classifier", label="Retrain", scale=2, min_width=260,
                               info="classifier: the conv layers' features of each photo computed once")
        names, files, groups = [], [], []
        for row_start in range(0, MAX_CLASSES, 3):   # three classes a row (one a row on a phone: rows wrap)
            with gr.Row(equal_height=False):
                for i in range(row_start, min(row_start + 3, MAX_CLASSES)):
                    with gr.Column(visible=i < SHOWN_AT_FIRST, min_width=260, variant="panel") as group:
                        names.append(gr.Textbox(label=f"Class {i + 1}", placeholder="a name, e.g. mug",
                                                elem_id=f"own-name-{i}", max_length=40))
                        files.append(gr.File(label="Photos: drop or pick", file_count="multiple",
                                             file_types=["image"], type="filepath", elem_id=f"own-photos-{i}",
                                             height=180))
                        with gr.Accordion("Webcam: take photos", open=False):
                            shot = gr.Image(sources=["webcam"], type="filepath", label="Take a photo", height=200)
                            gr.Button("Add this shot to the class", size="sm").click(
                                add_shot, inputs=[shot, files[i]], outputs=[files[i], shot], api_name=False)
                    groups.append(group)
        shown = gr.State(SHOWN_AT_FIRST)
        with gr.Row():
            more = gr.Button("+ Add a class", size="sm")
            go = gr.Button("Train on my classes", variant="primary", elem_id="own-train")
            stop = gr.Button("Stop", variant="stop", size="sm")
        status = gr.Markdown("", elem_id="own-status")
        with gr.Row(equal_height=False):   # side by side on a desktop, one under the other on a phone
            with gr.Column(min_width=340):
                result = gr.Markdown(elem_id="own-result")
            with gr.Column(min_width=340):
                matrix = gr.Plot(label="Confusion matrix (held-out photos)", elem_classes=["mpl-figure"])
        download = gr.DownloadButton("Download the model (.safetensors)", value=None, interactive=False)

    def add_class(count: int):
        count = min(count + 1, MAX_CLASSES)
        return count, *[gr.Column(visible=i < count) for i in range(MAX_CLASSES)]

    more.click(add_class, inputs=shown, outputs=[shown, *groups], api_name=False, show_progress="hidden")
    page.select(refresh_starts, inputs=[start, visitor], outputs=start, api_name=False, show_progress="hidden")
    training = go.click(train_own_classes, inputs=[visitor, start, retrain, *names, *files],
             outputs=[status, result, matrix, download, start, predict, inside, evaluate, evaluate_data, train_data],
             api_name="train_own_classes", concurrency_limit=settings.SHARING.runs_at_once,
             concurrency_id=TRAINING_QUEUE)
    # Stop ends the visitor's run (theirs only: the Train tab's Stop does the same) and this page's event with it.
    stop.click(stop_training, inputs=visitor, outputs=status, api_name=False, cancels=[training])
