"""The Predict tab: a photo in, the top classes out, with every class's probability and the image as the
network sees it. Also where a visitor brings a checkpoint of their own."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from alexnet_core.predict import Prediction, get_predictor, network_view
from alexnet_core.transforms import Preprocess

from . import settings
from .choices import (
    IMAGENET,
    NO_CHECKPOINT,
    PREDICT_DEVICE,
    default_checkpoint,
    knows_line,
    listed_checkpoint,
    load_predictor,
    model_choices,
    refresh_predict_choices,
)
from .fields import named_numbers
from .photos import add_examples, photo_input, readable
from .visitors import checkpoint_name, file_name, owner_of, upload_room, visitor_folder

MAX_BARS = 20  # the bar chart shows at most this many classes (a 1000-class net's tail is unreadable)
TTA_LABELS = {"none": "no test-time augmentation", "flip": "the image and its mirror (2 views)",
              "ten-crop": "the paper's ten crops (10 views)"}
PREDICT_PROMPT = "Upload a photo, take one with the webcam, paste one, or click an example."


def _empty_bars() -> pd.DataFrame:
    # Typed columns: an untyped empty frame makes "class" numeric, and the chart then never draws the classes.
    return pd.DataFrame({"class": pd.Series([], dtype=str), "probability": pd.Series([], dtype=float)})


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
    path = listed_checkpoint(checkpoint, owner, model_choices(owner) if checkpoint else None)
    if path is None:
        return None, NO_CHECKPOINT, None
    try:
        predictor = load_predictor(path)
        prediction = predictor.predict(image, top_k=k, tta=tta)
    except ValueError as error:  # not an image, a bad checkpoint, a bad k or tta: one sentence each
        raise gr.Error(readable(error, image)) from None
    source = "torchvision's ImageNet weights" if path == IMAGENET else f"`{checkpoint_name(path)}`"
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


# A checkpoint a visitor brings: read without unpickling (safetensors) and refused above this size.
MAX_CHECKPOINT_BYTES = 400 * 10**6  # the paper's AlexNet in float32 is 250 MB


def upload_checkpoint(file: str | None, visitor: str | None = None, request: gr.Request = None) -> gr.Dropdown:
    """Keeps a .safetensors checkpoint made by AlexNet Studio among the visitor's checkpoints (Predict, Inside
    and Evaluate list it for them) and selects it; gr.Error with one sentence for a file that is not one."""
    from alexnet_core.checkpoints import CheckpointError
    from alexnet_core.predict import Predictor

    if not file:
        return gr.Dropdown()
    owner, name = owner_of(visitor, request), file_name(file)
    size = os.path.getsize(file)
    if not name.lower().endswith(".safetensors"):
        raise gr.Error(f"{name} is not a .safetensors file: upload a checkpoint that AlexNet Studio made "
                       f"(a run's …-best.safetensors, from the Train tab's download button).")
    if size > MAX_CHECKPOINT_BYTES:
        raise gr.Error(f"{name} is {size / 10**6:,.0f} MB; checkpoints of at most {MAX_CHECKPOINT_BYTES // 10**6} MB "
                       f"are accepted.")
    room = upload_room(owner)
    if room is not None and size > room:
        raise gr.Error(f"{name} ({size / 10**6:,.0f} MB) does not fit in your room for uploads on this server "
                       f"({max(room, 0) / 10**6:,.0f} MB left).")
    try:
        Predictor.from_checkpoint(file)  # reads the header and the tensors (safetensors: no code runs), builds the net
    except (CheckpointError, ValueError, OSError) as error:
        reason = str(error).replace(file, name).replace(str(Path(file).parent) + os.sep, "")
        raise gr.Error(f"{name} is not a checkpoint AlexNet Studio can use: {reason}") from None
    folder = visitor_folder(owner)
    target_dir = (folder / "checkpoints") if folder is not None else settings.UPLOADS_DIR / "checkpoints"
    target = target_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9._-]', '_', name)[-80:]}"
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    gr.Info(f"{name} is now in your Checkpoint lists (Predict, Evaluate, Inside).")
    return gr.Dropdown(choices=model_choices(owner), value=str(target))  # Predict's list


def preload_shipped() -> None:
    """Loads and warms the shipped checkpoints, so that the first /predict pays for neither.

    Runs in a background thread once the app is built: the page is served at once, and a request that comes
    before the warm-up ends simply loads the model itself (the predictor cache is shared and locked)."""
    for path in sorted(settings.SHIPPED_DIR.glob("*.safetensors")):
        try:
            get_predictor(path, PREDICT_DEVICE)
        except ValueError:  # a damaged file is reported when someone picks it, not at start
            pass
    import alexnet_core.explain  # noqa: F401  (OpenCV and Grad-CAM: warm for the first Inside request)


def tab(app: gr.Blocks, visitor: gr.State) -> gr.Dropdown:
    """The Predict tab's layout and events; returns its checkpoint list (the page sets its choices per visitor)."""
    with gr.Tab("Predict", id="predict") as page:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image = photo_input(sources=["upload", "webcam", "clipboard"], label="Photo")
                # Custom values: the handler checks the visitor's own list (a run may have ended since the page
                # loaded), which the dropdown's fixed choices cannot.
                checkpoint = gr.Dropdown(choices=model_choices(), value=default_checkpoint(),
                                         label="Checkpoint", allow_custom_value=True, render=False)
                add_examples(image, checkpoint)
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

    named_numbers(k)
    page.select(refresh_predict_choices, inputs=[checkpoint, visitor], outputs=checkpoint, api_name=False)
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

