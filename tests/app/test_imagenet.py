"""The real AlexNet (torchvision's ImageNet weights) in Predict and Inside, with stand-in weights: no test downloads.

``stand_in`` replaces the download with random weights of torchvision's shapes (the state dict of an untrained
torchvision.models.alexnet, keys and all), so everything after the download runs as it does for real.
"""

from __future__ import annotations

import urllib.error

import gradio as gr
import pytest
import torch
from PIL import Image

import ui.choices
import ui.inside
import ui.predict
from alexnet_core import imagenet


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(imagenet, "_predictor", None)  # nothing kept from another test


@pytest.fixture
def stand_in(monkeypatch):
    from torchvision.models import alexnet

    torch.manual_seed(0)
    state_dict = alexnet().state_dict()  # torchvision's own keys (features.0.weight, …) and shapes, random values
    calls = []

    def download(weights):
        calls.append(weights)
        return state_dict

    monkeypatch.setattr(imagenet, "_download_state_dict", download)
    return calls


def test_the_weights_description_gives_classes_preprocessing_and_accuracy():
    weights = imagenet._weights()
    assert len(weights.meta["categories"]) == 1000
    assert round(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"], 1) == imagenet.TOP1
    pre = imagenet.preprocess(weights)
    assert (pre.input_size, pre.store_size) == (224, 256) and pre.mean == (0.485, 0.456, 0.406)


def test_predict_with_stand_in_weights_downloads_once_and_names_imagenet_classes(stand_in):
    photo = Image.new("RGB", (300, 200), "orange")
    label, info, shown = ui.predict.predict_image(photo, ui.choices.IMAGENET, 5)
    categories = imagenet._weights().meta["categories"]
    assert len(label) == 5 and set(label) <= set(categories)
    assert "**Knows 1,000 classes:** tench, goldfish, great white shark" in info and "ImageNet weights" in info
    # the same numbers as torchvision's own alexnet with those weights and its own transforms
    from torchvision.models import alexnet
    reference = alexnet()
    reference.load_state_dict(imagenet._download_state_dict(None))
    x = imagenet._weights().transforms()(photo)[None]
    expected = torch.softmax(reference.eval()(x), 1)[0]
    top = max(label, key=label.get)
    assert label[top] == pytest.approx(expected.max().item(), abs=1e-3)
    assert top == categories[expected.argmax().item()]
    ui.predict.predict_image(photo, ui.choices.IMAGENET, 3)
    assert len(stand_in) == 2  # the test's own call and the app's first one: the app downloaded once


def test_inside_explains_with_the_imagenet_alexnet(stand_in):
    top, gradcam, filters, gallery, info = ui.inside.explain_photo(Image.new("RGB", (240, 240), "green"),
                                                                    ui.choices.IMAGENET)
    assert len(top) == 5 and gradcam is not None and len(gallery) == 5 and "Knows 1,000 classes" in info
    assert ui.choices.IMAGENET in dict(ui.choices.inside_choices()).values()
    assert ui.choices.IMAGENET in dict(ui.choices.model_choices()).values()


def test_without_internet_the_answer_is_one_sentence(monkeypatch):
    def offline(weights):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(imagenet, "_download_state_dict", offline)
    with pytest.raises(gr.Error) as refused:  # the page's toast, AppError for an API client
        ui.predict.predict_image(Image.new("RGB", (64, 64)), ui.choices.IMAGENET)
    info = refused.value.message
    assert info.startswith("The ImageNet AlexNet needs a 233 MB download") and "\n" not in info
    assert info.count(". ") == 0 and info.endswith(".")
    with pytest.raises(gr.Error) as refused:
        ui.inside.explain_photo(Image.new("RGB", (64, 64)), ui.choices.IMAGENET)
    assert refused.value.message.startswith("The ImageNet AlexNet needs")


def test_weights_of_the_wrong_shape_are_refused(monkeypatch):
    monkeypatch.setattr(imagenet, "_download_state_dict",
                        lambda weights: {"features.0.weight": torch.zeros(1)})
    with pytest.raises(imagenet.CheckpointError, match="hold 1 tensors"):
        imagenet.imagenet_predictor()


def test_the_architecture_link_opens_the_imagenet_alexnet_where_it_is_downloaded(monkeypatch):
    monkeypatch.setattr(imagenet, "is_downloaded", lambda: False)
    _, checkpoint, _, _ = ui.inside.show_layer_inside("alexnet_torchvision", "conv1", None, None)
    assert checkpoint.value == "untrained:alexnet_torchvision"  # never a download behind a link
    monkeypatch.setattr(imagenet, "is_downloaded", lambda: True)
    _, checkpoint, _, _ = ui.inside.show_layer_inside("alexnet_torchvision", "conv1", None, None)
    assert checkpoint.value == ui.choices.IMAGENET
