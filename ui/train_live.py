"""The Train tab's view of the network while it learns (issue 27), as ConvNetJS's CIFAR-10 demo shows it: conv1's
filters, the most active feature maps of each conv layer for one photo, the guesses on fixed validation images
(right ones framed green, wrong ones red) and the validation confusion matrix with accuracy per class; then a
timeline of every snapshot so far, and the filters' timeline as an animated GIF.

Every picture comes from one snapshot (alexnet_core.snapshots), rendered together in one answer. The live view
reads the visitor's run from the runner (only the newest snapshot is in memory); the timeline reads the run
directory, so a finished run, a resumed one and a reload show the same snapshots. Only the visitor's own run is
ever read: the run directory comes from their runner or their own runs folder, never from the request.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from alexnet_core import snapshots
from alexnet_core.checkpoints import SNAPSHOTS_FOLDER
from alexnet_core.images import ImageError, decode_image
from alexnet_core.plots import confusion_counts_plot
from alexnet_core.runner import RUNNER
from alexnet_core.transforms import Preprocess

from .photos import photo_input, readable
from .visitors import owner_of, runs_dir

WAITING = "The network's filters, feature maps and guesses appear here when a run starts, and change at every " \
          "validation (and at least every 30 s in a long epoch)."


def layout() -> dict[str, gr.components.Component]:
    """The live view's components, in the Train tab's Blocks: returned by name for the events to wire."""
    c: dict[str, gr.components.Component] = {}
    with gr.Accordion("The network, live", open=True):
        c["caption"] = gr.Markdown(WAITING, elem_id="live-caption")
        with gr.Row(equal_height=False):
            c["filters"] = gr.Image(label="conv1's filters", type="pil", interactive=False, height=260,
                                    elem_id="live-filters")
            c["guesses"] = gr.Image(label="Guesses on fixed validation images (green: right, red: wrong)",
                                    type="pil", interactive=False, height=260, elem_id="live-guesses")
        c["features"] = gr.Gallery(label="The most active feature maps of each conv layer, for the photo",
                                   columns=5, height="auto", object_fit="contain", allow_preview=True)
        with gr.Row(equal_height=False):
            c["confusion"] = gr.Plot(label="Validation confusion matrix", elem_classes=["mpl-figure"])
            c["per_class"] = gr.Dataframe(label="Validation accuracy per class", interactive=False)
        # The same photo box as every tab's: its caps are checked from the header before anything decodes it.
        c["photo"] = photo_input(label="Your photo for the feature maps (default: a validation image)",
                                 sources=["upload", "webcam", "clipboard"], height=160)
        with gr.Row():
            c["timeline"] = gr.Slider(1, 2, value=1, step=1, label="Timeline: snapshot", interactive=True,
                                      elem_id="live-timeline")
            c["gif"] = gr.DownloadButton("Download the filters' timeline (GIF)", interactive=False, elem_id="live-gif")
    return c


LIVE_OUTPUTS = ("caption", "filters", "guesses", "features", "confusion", "per_class")


def pictures(snapshot: snapshots.Snapshot | None, images: snapshots.SnapshotImages | None, prefix: str = ""
             ) -> tuple:
    """The live view's outputs (LIVE_OUTPUTS' order), all from ``snapshot``; unchanged (skip) when there is none."""
    if snapshot is None or images is None:
        return (gr.skip(),) * len(LIVE_OUTPUTS)
    per_class = snapshot.per_class(images.classes)
    right = int((snapshot.guesses == images.labels).sum())
    caption = (f"{prefix}**{snapshot.label()}**: {right} of {len(images.labels)} fixed images guessed right"
               + (f", {snapshot.val_acc:.1%} of the validation split" if snapshot.val_acc is not None else "")
               + ("" if snapshot.validated else " (the confusion matrix is the last validation's)") + ".")
    features = [(snapshots.features_image(snapshot, layer), f"{layer} · channels "
                 f"{', '.join(map(str, snapshot.channels[layer][:4]))}…") for layer in snapshot.features]
    confusion = gr.skip() if snapshot.confusion is None else confusion_counts_plot(
        snapshot.confusion.numpy(), images.classes, f"epoch {snapshot.epoch}: {snapshot.val_acc:.1%} correct")
    table = gr.skip() if not per_class else pd.DataFrame(
        {"class": list(per_class), "accuracy": [f"{v:.1%}" for v in per_class.values()]})
    return (caption, snapshots.filters_image(snapshot), snapshots.guesses_image(snapshot, images), features,
            confusion, table)


OUTPUTS = (*LIVE_OUTPUTS, "timeline", "gif")   # what the Train tab's answers write of the live view


def live(state, fresh: bool = True) -> tuple:
    """The live view for a runner state (alexnet_core.runner.RunSnapshot), then the timeline slider's range and the
    GIF button, which holds the filters' timeline once the run has ended (OUTPUTS' order). Unchanged (skip) when
    not ``fresh``: the page shows this snapshot already."""
    if not fresh:
        return (gr.skip(),) * len(OUTPUTS)
    count = len(snapshots.paths(state.run_dir)) if state.run_dir and state.latest is not None else 0
    slider = gr.Slider(1, max(count, 2), value=count, step=1) if count else gr.skip()   # (a range of one is none)
    gif = timeline_gif(Path(state.run_dir)) if count > 1 and not state.active else None
    return (*pictures(state.latest, state.latest_images), slider,
            gr.DownloadButton(value=gif, interactive=gif is not None))


def wire(c: dict, visitor: gr.State) -> None:
    """The live view's own events: the timeline slider and the photo for the feature maps."""
    c["timeline"].release(at_snapshot, inputs=[c["timeline"], visitor], outputs=[c[k] for k in LIVE_OUTPUTS],
                          api_name=False, trigger_mode="always_last", show_progress="hidden")
    c["photo"].change(use_photo, inputs=[c["photo"], visitor], outputs=None, api_name=False,
                      show_progress="hidden")


def timeline_gif(run_dir: Path) -> str | None:
    """The run's filters' timeline written as <run>-filters.gif in Gradio's own temporary folder (which it
    serves as a download, never as a page), or None without snapshots."""
    gif = snapshots.filters_animation(run_dir)
    if gif is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="timeline-", dir=os.environ.get("GRADIO_TEMP_DIR")))
    out = folder / f"{run_dir.name}-filters.gif"
    out.write_bytes(gif)
    return str(out)


def _run_dir(owner: str) -> Path | None:
    """The visitor's run to look back at: the one their runner knows, else their newest run on disk."""
    state = RUNNER.snapshot(owner)
    if state.run_dir and Path(state.run_dir).is_dir():
        return Path(state.run_dir)
    folder = runs_dir(owner)
    mine = [d for d in folder.glob("*") if (d / SNAPSHOTS_FOLDER).is_dir()] if folder.is_dir() else []
    return max(mine, key=lambda d: d.stat().st_mtime) if mine else None


def at_snapshot(position: float, visitor: str | None = None, request: gr.Request = None) -> tuple:
    """The live view as it was at the ``position``-th snapshot of the visitor's run (1 is the first)."""
    run_dir = _run_dir(owner_of(visitor, request))
    files = snapshots.paths(run_dir) if run_dir else []
    if not files:
        return (WAITING, *(gr.skip(),) * (len(LIVE_OUTPUTS) - 1))
    index = min(max(int(position or 1), 1), len(files)) - 1
    snapshot = snapshots.load(files[index])
    return pictures(snapshot, snapshots.load_images(run_dir), prefix=f"Snapshot {index + 1} of {len(files)}, ")


def use_photo(photo, visitor: str | None = None, request: gr.Request = None) -> str:
    """Shows ``photo``'s feature maps in the visitor's next snapshots (None: back to the validation image), and
    says so in a toast."""
    owner = owner_of(visitor, request)
    run_dir = _run_dir(owner)
    images = snapshots.load_images(run_dir) if run_dir else None
    if images is None:
        raise gr.Error("Start a run first: its snapshots then show your photo's feature maps.")
    if photo is None:
        RUNNER.set_photo(None, owner)
        return _said("The feature maps show a validation image again from the next snapshot on.")
    side, channels = images.photo.shape[-1], images.photo.shape[0]
    pre = Preprocess(input_size=side, store_size=side, in_channels=channels, mean=(0.5,) * channels,
                     std=(0.5,) * channels)
    try:
        tensor = decode_image(photo, pre)
    except ImageError as error:
        raise gr.Error(readable(error, photo)) from None
    RUNNER.set_photo(tensor, owner)
    return _said("Your photo's feature maps show from the next snapshot on.")


def _said(sentence: str) -> str:
    gr.Info(sentence)
    return sentence
