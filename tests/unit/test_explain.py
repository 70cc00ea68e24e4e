"""Tests for explain.py: feature maps, grids, conv1 filters, Grad-CAM, the bundle and its files."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from alexnet_core import data, images, transforms
from alexnet_core.explain import (
    MIN_FILTER,
    MIN_TILE,
    ExplainError,
    activation_grid,
    conv_layers,
    explain,
    feature_maps,
    first_layer_filters,
    grad_cam,
    gradcam_overlay,
    resolve_class,
    untrained_variant,
    write_explanation,
)
from alexnet_core.models import MODELS, build_model, get_spec
from tests.helpers import assert_one_sentence


def _photo(size: tuple[int, int] = (48, 40), seed: int = 0) -> Image.Image:
    """A non-square RGB photo with structure (a gradient, a disc and noise)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((xx - w / 3) ** 2 + (yy - h / 2) ** 2 < (h / 4) ** 2) * 120.0
    pixels = np.stack([xx / w * 200, yy / h * 200, disc], axis=2) + rng.normal(0, 15, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _input(name: str, seed: int = 0) -> torch.Tensor:
    pre = data.preprocess_for(get_spec(name))
    return transforms.eval_transform(images.decode_image(_photo(seed=seed), pre), pre)


@pytest.fixture(scope="module")
def hires():
    torch.manual_seed(0)
    return untrained_variant("alexnet_cifar_hires")


def test_feature_maps_are_the_relu_outputs_of_every_conv_layer(hires):
    model, _ = hires
    maps = feature_maps(model, _input("alexnet_cifar_hires"))
    assert list(maps) == ["conv1", "conv2", "conv3", "conv4", "conv5"] == conv_layers(model)
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "conv1": (64, 32, 32), "conv2": (192, 16, 16), "conv3": (384, 8, 8), "conv4": (256, 8, 8),
        "conv5": (256, 8, 8)}
    # After BatchNorm and ReLU: never negative, and not all zero.
    assert all(v.min() >= 0 and v.max() > 0 for v in maps.values())


def test_feature_maps_leave_mode_and_batchnorm_statistics_alone():
    torch.manual_seed(0)
    model = build_model("alexnet_cifar_hires").train()
    before = model.features.bn1.running_mean.clone()
    feature_maps(model, _input("alexnet_cifar_hires"))
    assert model.training  # put back as it was
    assert torch.equal(model.features.bn1.running_mean, before)  # ran in eval mode: statistics untouched


def test_activation_grid_shows_the_most_active_channels(hires):
    model, _ = hires
    maps = feature_maps(model, _input("alexnet_cifar_hires"))
    grid = activation_grid(maps, "conv3", top=16)
    means = maps["conv3"].mean((1, 2))
    assert grid.channels == means.argsort(descending=True)[:16].tolist()
    assert grid.label == "conv3 · 384×8×8"
    # 4x4 tiles of 8x8 maps upscaled by a whole factor to at least MIN_TILE, with 2 px gaps.
    tile = 8 * -(-MIN_TILE // 8)
    assert grid.image.size == (4 * tile + 5 * 2,) * 2
    pixels = np.asarray(grid.image)
    assert pixels.std() > 0
    # Each tile is normalised on its own: the first one spans the whole colour map (dark to bright).
    first = pixels[2:2 + tile, 2:2 + tile].sum(2)
    assert first.min() < 100 and first.max() > 600
    assert activation_grid(maps, "conv1", top=1000).channels.__len__() == 64
    with pytest.raises(ExplainError, match="conv9"):
        activation_grid(maps, "conv9")


def test_first_layer_filters_rgb_and_grey():
    torch.manual_seed(0)
    small = build_model("alexnet_cifar_small")  # 64 filters of 5x5
    image = np.asarray(first_layer_filters(small))
    side = 5 * -(-MIN_FILTER // 5)
    assert side >= MIN_FILTER and image.shape == (8 * side + 9 * 2, 8 * side + 9 * 2, 3)
    first = image[2:2 + side, 2:2 + side]
    assert first.min() == 0 and first.max() == 255  # min-max normalised per filter
    assert not np.array_equal(first[..., 0], first[..., 1])  # colour filters

    fashion = build_model("alexnet_fashion")  # one input channel: grey
    grey = np.asarray(first_layer_filters(fashion))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert grey.std() > 0


def test_grad_cam_leaves_the_callers_model_as_it_was(hires):
    model, _ = hires
    x = _input("alexnet_cifar_hires")
    with torch.no_grad():  # callers may be in no-grad mode; Grad-CAM turns gradients on for itself
        heatmap, chosen = grad_cam(model, x)
        logits = model(x[None])[0]
    assert heatmap.shape == (32, 32) and 0 <= heatmap.min() and heatmap.max() <= 1
    assert chosen == int(logits.argmax())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    with pytest.raises(ExplainError, match="Class 10"):
        grad_cam(model, x, target_class=10)
    with pytest.raises(ExplainError, match="no layer 'conv7'"):
        grad_cam(model, x, layer="conv7")


def _square_images(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 noise; label 1 images hold a bright 8x8 square somewhere, label 0 images do not."""
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.5
    y = torch.randint(0, 2, (n,), generator=g)
    for i in torch.nonzero(y).flatten().tolist():
        top, left = torch.randint(0, 25, (2,), generator=g).tolist()
        x[i, :, top:top + 8, left:left + 8] = 1.0
    return (x - 0.5) / 0.25, y


def _with_square_at(left: int, g: torch.Generator) -> torch.Tensor:
    x = torch.rand(3, 32, 32, generator=g) * 0.5
    x[:, 12:20, left:left + 8] = 1.0
    return (x - 0.5) / 0.25


def test_grad_cam_peak_follows_the_object():
    """A small net learns "is there a bright square"; Grad-CAM must point at the square wherever it is."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_model("alexnet_cifar_small", num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(30):  # a few seconds; the task is learnt after about 20 steps
        x, y = _square_images(32, g)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x, y = _square_images(256, g)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95  # it has learnt the task

    peaks = []
    for third, left in enumerate((2, 12, 22)):  # the square in the left, middle and right third
        heatmap, _ = grad_cam(model, _with_square_at(left, g), target_class=1)
        row, column = np.unravel_index(heatmap.argmax(), heatmap.shape)
        # The peak is in the square's third and at its height. (pytorch-grad-cam stretches the 9x9 map
        # over the whole 32x32 input, so a peak near an edge lands a few pixels further out.)
        assert int(column // (32 / 3)) == third and abs(row - 15.5) <= 4, (left, row, column)
        peaks.append(column)
    assert peaks[0] < peaks[1] < peaks[2]


def test_gradcam_overlay_grey_photo_and_resized_heatmap():
    photo = np.full((64, 96), 128, dtype=np.uint8)  # grey photo, wider than high
    heatmap = np.zeros((8, 8), dtype=np.float32)
    heatmap[:, 6:] = 1.0  # hot on the right
    overlay = np.asarray(gradcam_overlay(photo, heatmap))
    assert overlay.shape == (64, 96, 3)
    assert overlay[:, -10:].mean() > overlay[:, :10].mean() + 50  # the hot side is brighter


def test_resolve_class():
    classes = ["cat", "dog", "7"]
    assert resolve_class("dog", classes) == 1
    assert resolve_class(" 0 ", classes) == 0
    assert resolve_class(2, classes) == 2
    assert resolve_class("7", classes) == 2  # a class name wins over an index
    for wrong in ("cow", "3", -1):
        with pytest.raises(ExplainError, match="neither"):
            resolve_class(wrong, classes)


def test_explain_and_write_explanation(hires, tmp_path):
    model, meta = hires
    result = explain(model, meta, _photo(), top_k=3)
    assert [grid.label for grid in result.activations] == [
        "conv1 · 64×32×32", "conv2 · 192×16×16", "conv3 · 384×8×8", "conv4 · 256×8×8", "conv5 · 256×8×8"]
    assert len(result.top_k) == 3 and [name for name, _ in result.top_k][0] == result.target_name
    probabilities = [p for _, p in result.top_k]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert result.heatmap.shape == (32, 32)

    picked = explain(model, meta, _photo(), target_class="class 3")
    assert (picked.target_class, picked.target_name) == (3, "class 3")
    assert explain(model, meta, _photo(), target_class="3").target_class == 3

    paths = write_explanation(result, tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(
        [f"activations_conv{i}.png" for i in range(1, 6)] + ["filters_conv1.png", "gradcam.png"])
    for path in paths:
        with Image.open(path) as image:
            assert min(image.size) >= 64, path.name
            assert np.asarray(image).std() > 0, path.name



def test_explain_leaves_the_model_alone_and_takes_channels_last(hires):
    """The app shares its models with the Predict tab: explain must work on a copy, in eval mode."""
    model, meta = hires
    shared = copy.deepcopy(model).to(memory_format=torch.channels_last).train()
    before = shared.features.bn1.running_mean.clone()
    expected, result = explain(model, meta, _photo()), explain(shared, meta, _photo())
    assert shared.training and torch.equal(shared.features.bn1.running_mean, before)
    assert not any(m._forward_hooks for m in shared.modules())
    np.testing.assert_allclose(result.heatmap, expected.heatmap, atol=1e-4)
    assert result.top_k[0][0] == expected.top_k[0][0]
    assert abs(result.top_k[0][1] - expected.top_k[0][1]) < 1e-5

def test_explain_takes_a_preprocess_and_class_names():
    torch.manual_seed(0)
    model = build_model("alexnet_cifar_small", num_classes=3)
    pre = data.preprocess_for(get_spec("alexnet_cifar_small"))
    result = explain(model, pre, _photo(), classes=["a", "b", "c"], target_class="b")
    assert result.target_name == "b" and {name for name, _ in result.top_k} == {"a", "b", "c"}
    with pytest.raises(ExplainError, match="3 classes but 2"):
        explain(model, pre, _photo(), classes=["a", "b"])
    for top_k in (0, -1, 2.5, "3"):  # as Predictor.predict refuses them
        with pytest.raises(ValueError) as err:
            explain(model, pre, _photo(), classes=["a", "b", "c"], top_k=top_k)
        assert_one_sentence(err.value, "whole number from 1 to 1000")


# The 46–67 M parameter variants (alexnet, alexnet_grouped, alexnet_torchvision, alexnet_cifar_npu,
# alexnet_fashion) take about a second each here: Grad-CAM copies the model and the backward pass skips
# the weights' gradients, so they stay in the test.
@pytest.mark.parametrize("name", list(MODELS))
def test_untrained_variants_work_at_their_own_size(name):
    torch.manual_seed(0)
    model, meta = untrained_variant(name)
    spec = get_spec(name)
    photo = _photo().convert("L") if spec.in_channels == 1 else _photo()
    result = explain(model, meta, photo, top_channels=4)
    assert [grid.layer for grid in result.activations] == conv_layers(model)
    assert all(grid.shape[0] == getattr(model.features, grid.layer).out_channels for grid in result.activations)
    assert all(np.asarray(grid.image).std() > 0 for grid in result.activations[:1])
    assert result.heatmap.shape == (spec.input_size, spec.input_size)
    assert 0 <= result.heatmap.min() and result.heatmap.max() <= 1  # untrained maps may be all zero
    assert min(result.gradcam.size) >= 224 and np.asarray(result.gradcam).std() > 0
    filters = np.asarray(result.filters)
    assert (np.array_equal(filters[..., 0], filters[..., 2])) == (spec.in_channels == 1)
    assert len(result.top_k) == 5 and result.target_name.startswith("class ")
