"""The Inside tab: what each conv layer of a network sees in a photo, conv1's filters, and where the network
looks (Grad-CAM), for a trained checkpoint, the ImageNet AlexNet or an untrained variant."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import gradio as gr
from PIL import Image

from alexnet_core import imagenet
from alexnet_core.checkpoints import read_metadata
from alexnet_core.runner import LOCAL

from .choices import (
    IMAGENET,
    NO_CHECKPOINT,
    UNTRAINED,
    checkpoint_infos,
    default_checkpoint,
    inside_choices,
    knows_line,
    listed_checkpoint,
    load_predictor,
    refresh_inside_choices,
)
from .messages import markdown_text, whole_or_cleared
from .photos import add_examples, example_photos, photo_input, readable
from .visitors import owner_of

PREDICTED = "predicted class"
INSIDE_PROMPT = "Upload a photo to see what each conv layer sees and where the network looks."


@functools.lru_cache(maxsize=2)  # the paper's nets take a quarter of a second to build
def _untrained(name: str):
    from alexnet_core.explain import untrained_variant  # Grad-CAM pulls in OpenCV: not at start-up

    return untrained_variant(name)


def _inside_model(choice: str):
    """(model, metadata) for a choice; checkpoints come from Predict's cache (reloaded when the file changes)."""
    if choice.startswith(UNTRAINED):
        return _untrained(choice[len(UNTRAINED):])
    predictor = load_predictor(choice)
    return predictor.model, predictor.meta


def class_choices(choice: str | None, visitor: str | None = None, request: gr.Request = None) -> gr.Dropdown:
    """The class picker for a model: "predicted class", then the model's classes; only "predicted class" for a
    checkpoint that is not in the caller's list (an API client can send any path, by the event's index too)."""
    owner = owner_of(visitor, request)
    try:
        listed = bool(choice) and listed_checkpoint(choice, owner, inside_choices(owner)) is not None
        classes = _inside_model(choice)[1]["classes"] if listed else []
    except (ValueError, gr.Error):  # a broken checkpoint (explain_photo says why), or not the caller's
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
    choice = listed_checkpoint(checkpoint, owner, inside_choices(owner) if checkpoint else None)
    if choice is None:
        return None, None, None, [], NO_CHECKPOINT
    try:
        model, meta = _inside_model(choice)
        start = time.perf_counter()
        result = explain(model, meta, image, target_class=None if target in (None, "", PREDICTED) else target)
    except ValueError as error:  # not an image, a bad checkpoint, an unknown class: one sentence each
        raise gr.Error(readable(error, image)) from None
    info = (f"Grad-CAM explains **{markdown_text(result.target_name)}** · {time.perf_counter() - start:.2f} s on "
            f"the CPU · {meta['model']} · each tile is one channel, normalised on its own (dark: quiet, bright: active)"
            f"\n\n{knows_line(meta['classes'])}")
    gallery = [(grid.image, grid.label) for grid in result.activations]
    layers = [grid.layer for grid in result.activations]
    if layer in layers:
        gallery = gr.Gallery(value=gallery, selected_index=layers.index(layer))
    return dict(result.top_k), result.gradcam, result.filters, gallery, info


def explain_page(image: Image.Image | str | None, checkpoint: str | None = None, target: str | None = PREDICTED,
                 layer: str | None = None, visitor: str | None = None, request: gr.Request = None,
                 progress=gr.Progress(track_tqdm=True)):
    """``explain_photo`` for the page and the API, written whole: a refused photo or checkpoint clears the
    answer it replaces, and its sentence stands in the info line."""
    yield from whole_or_cleared(lambda: explain_photo(image, checkpoint, target, layer, visitor, request, progress),
                                lambda message: (None, None, None, [], f"⚠️ {message}"))


def show_layer_inside(model: str, layer: str | None, checkpoint: str | None, image, visitor: str | None = None,
                      request: gr.Request = None):
    """The Architecture tab's link: opens the Inside tab on ``layer`` of ``model`` — with a checkpoint of that
    variant where there is one, else the untrained variant — and an example photo if none is there yet. A
    checkpoint that is not in the caller's list is not read (an API client can send any path)."""
    owner = owner_of(visitor, request)
    choices = inside_choices(owner)
    if owner != LOCAL and checkpoint not in {path for _, path in choices}:
        checkpoint = None
    if not (checkpoint and not checkpoint.startswith(UNTRAINED) and _checkpoint_model(checkpoint) == model):
        trained = [str(info.path) for info in checkpoint_infos(owner) if info.model == model]
        if model == imagenet.MODEL and imagenet.is_downloaded():  # the real AlexNet, where it is already here
            trained.append(IMAGENET)
        checkpoint = trained[0] if trained else UNTRAINED + model
    if image is None:
        image = _example_for(checkpoint)
    return gr.Tabs(selected="inside"), gr.Dropdown(choices=choices, value=checkpoint), image, layer


def _example_for(checkpoint: str) -> Image.Image | None:
    """An example photo for the Architecture tab's link: one whose class the checkpoint knows, else a flower
    (a real photo shows more in every layer than a 32x32 image), else none."""
    rows = example_photos()
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


def tab(app: gr.Blocks, visitor: gr.State) -> tuple[gr.Image, gr.Dropdown, gr.State, gr.Dependency]:
    """The Inside tab's layout and events; returns what the Architecture tab's link sets (photo, checkpoint,
    layer) and the explain event."""
    with gr.Tab("Inside", id="inside") as page:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image = photo_input(label="Photo")
                checkpoint = gr.Dropdown(choices=inside_choices(), value=default_checkpoint(), label="Checkpoint",
                                         allow_custom_value=True, render=False)
                add_examples(image, checkpoint)
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

    page.select(refresh_inside_choices, inputs=[checkpoint, visitor], outputs=checkpoint, api_name=False)
    checkpoint.change(class_choices, inputs=[checkpoint, visitor], outputs=target, api_name=False)
    app.load(class_choices, inputs=[checkpoint, visitor], outputs=target, api_name=False)
    explained = gr.on(
        triggers=[image.change, checkpoint.change, target.change, focus.change],
        fn=explain_page,
        inputs=[image, checkpoint, target, focus, visitor],
        outputs=[top, gradcam, filters, gallery, info],
        api_name="explain",
        trigger_mode="always_last",
    )
    return image, checkpoint, focus, explained

