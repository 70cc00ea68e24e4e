"""The Evaluate tab: a checkpoint measured on a split of a data set, with per-class accuracy, the confusion
matrix and the images it was most confidently wrong about."""

from __future__ import annotations

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from alexnet_core import images
from alexnet_core.devices import resolve_device
from alexnet_core.evaluate import EvalResult, evaluate_checkpoint
from alexnet_core.plots import confusion_plot
from alexnet_core.runner import LOCAL
from alexnet_core.transforms import TTA_CHOICES

from .choices import (
    NO_CHECKPOINT,
    checkpoint_choices,
    data_choices,
    default_checkpoint,
    default_data,
    listed_checkpoint,
    refresh_checkpoints,
)
from .fields import named_numbers
from .messages import whole_or_cleared
from .visitors import for_the_page, owner_of

MISTAKES_SHOWN = 12
GALLERY_MIN_SIDE = 128  # small images (CIFAR's 32) are enlarged, without smoothing, to at least this
GALLERY_MAX_SIDE = 256  # and large photos shrunk, to keep the page light


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=["class", "accuracy", "correct", "images"])


def _gallery_image(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image).convert("RGB")
    if max(image.size) > GALLERY_MAX_SIDE:
        image.thumbnail((GALLERY_MAX_SIDE, GALLERY_MAX_SIDE))
    return images.enlarge(image, GALLERY_MIN_SIDE)


def _mistake_images(result: EvalResult, indices: list[int]) -> list[Image.Image]:
    """The images behind ``indices``, as the evaluation measured them: from their files where the data has
    files, else from the decoded pixels it kept (built-in data sets)."""
    if result.paths:
        shown = []
        for i in indices:
            with Image.open(result.paths[i]) as opened:
                shown.append(_gallery_image(opened))
        return shown
    pixels = [result.images[i].permute(1, 2, 0).cpu().numpy() for i in indices]
    return [_gallery_image(Image.fromarray(p[:, :, 0] if p.shape[2] == 1 else p)) for p in pixels]


def evaluate_view(checkpoint: str | None, data: str | None, split: str = "test", limit: float | None = 1000,
                  tta: str = "none", visitor: str | None = None, request: gr.Request = None,
                  progress: gr.Progress = gr.Progress()) -> tuple[str, pd.DataFrame, Figure | None, list]:
    """Accuracy in words, per-class accuracy (a table), the confusion matrix (a heat map) and the most
    confidently wrong images with their captions; gr.Error with the sentence that says what is wrong."""
    owner = owner_of(visitor, request)
    checkpoint = listed_checkpoint(checkpoint, owner)
    if checkpoint is None:
        return NO_CHECKPOINT, _empty_table(), None, []
    if not data:
        raise gr.Error("Pick the data to evaluate on.")
    if owner != LOCAL and data not in dict(data_choices(owner)).values():  # an API client can send any path
        raise gr.Error("That data set is not in the list of choices: pick one from the Data list (your uploaded "
                       "data sets are there).")
    limit = int(limit) if limit else None
    progress(0, desc=f"Evaluating on {f'{limit:,} images' if limit else f'the whole {split} split'}…")
    try:
        result = evaluate_checkpoint(checkpoint, data, split, device=str(resolve_device("auto")), tta=tta,
                                     limit=limit)
        mistakes = result.most_confident_mistakes(MISTAKES_SHOWN)
        images = _mistake_images(result, mistakes)
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


def evaluate_page(checkpoint: str | None, data: str | None, split: str = "test", limit: float | None = 1000,
                  tta: str = "none", visitor: str | None = None, request: gr.Request = None,
                  progress: gr.Progress = gr.Progress()):
    """``evaluate_view`` for the page and the API, written whole: a refused evaluation clears the result it
    replaces (an old "66.7% correct" beside the new error would read as its answer)."""
    yield from whole_or_cleared(
        lambda: evaluate_view(checkpoint, data, split, limit, tta, visitor, request, progress),
        lambda message: (f"⚠️ {message}", _empty_table(), None, []))


def tab(app: gr.Blocks, visitor: gr.State) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The Evaluate tab's layout and events; returns its checkpoint and data lists (set per visitor)."""
    with gr.Tab("Evaluate", id="evaluate") as page:
        with gr.Row():
            checkpoint = gr.Dropdown(choices=checkpoint_choices(), value=default_checkpoint(),
                                     label="Checkpoint", scale=3, allow_custom_value=True)
            choices = data_choices()
            data = gr.Dropdown(choices=choices, value=default_data(choices), label="Data", scale=3)
        with gr.Row():
            split = gr.Radio(["test", "val"], value="test", label="Split")
            limit = gr.Number(label="Images (0 or blank: all)", value=1000, precision=0, minimum=0)
            tta = gr.Radio(list(TTA_CHOICES), value="none", label="Test-time augmentation")
            run = gr.Button("Evaluate", variant="primary")
        summary = gr.Markdown("Pick a checkpoint and data, then Evaluate.")
        with gr.Row(equal_height=False):
            table = gr.Dataframe(label="Accuracy per class", interactive=False)
            matrix = gr.Plot(label="Confusion matrix", elem_classes=["mpl-figure"])
        gallery = gr.Gallery(label="Most confidently wrong", columns=6, height="auto", object_fit="contain",
                             elem_id="mistakes")

    named_numbers(limit)
    page.select(refresh_checkpoints, inputs=[checkpoint, visitor], outputs=checkpoint, api_name=False)
    run.click(evaluate_page, inputs=[checkpoint, data, split, limit, tta, visitor],
              outputs=[summary, table, matrix, gallery], api_name="evaluate")
    return checkpoint, data
