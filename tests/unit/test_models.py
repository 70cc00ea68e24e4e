"""The model zoo: exact parameter counts, the build options, real forward passes, torchvision parity."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from alexnet_core.models import MODELS, build_model, count_params, get_spec

# Counted by hand from the layer widths in models.py (and, for alexnet_torchvision, equal to torchvision's).
EXPECTED_PARAMS = {
    "alexnet": 62_378_344,
    "alexnet_grouped": 60_965_224,
    "alexnet_torchvision": 61_100_840,
    "alexnet_flowers": 14_591_685,
    "alexnet_cifar": 6_616_714,
    "alexnet_cifar_small": 576_778,
    "alexnet_cifar_npu": 67_004_746,
    "alexnet_cifar_hires": 6_977_994,
    "alexnet_cifar_fast": 6_977_994,
    # conv1 3·24·2·2 + 24; conv2–conv5 3·3·cin·cout (no biases: BatchNorm) + 2·cout each; fc6 256·10 (no bias)
    "alexnet_cifar_air": 312 + 13_824 + 128 + 147_456 + 512 + 589_824 + 512 + 589_824 + 512 + 2_560,
    "alexnet_fashion": 46_764_746,
}


# Every layer's output shape (channels x height x width, batch left out) at the variant's own input size, as its
# source states it. Written out by hand from the sources, never computed from the model:
# - alexnet, alexnet_grouped: the 2012 paper at 227 (section 3.5 and Figure 2: 55x55x96, 27x27x256, 13x13x384,
#   13x13x384, 13x13x256, the pools between, 6x6x256 = 9,216 into a 4096-4096-1000 classifier).
# - alexnet_torchvision: torchvision's alexnet at 224 (torchinfo's table: 64x55x55 … 256x6x6 after avgpool).
# - alexnet_flowers: the flowers tutorial's model.py comments (input[3, 224, 224] output[48, 55, 55] …).
# - alexnet_cifar: the Paddle tutorial's paddle.summary at 32 (also in tests/unit/test_summary.py).
# - alexnet_cifar_small: the sides models.py documents, 32 → 28 → 13 → 9 → 4, widths 64, 64, FC 384-192.
# - alexnet_cifar_npu: the Ascend tutorial's comments: 64x15x15, pool 64x14x14, 256x14x14, pool 256x7x7,
#   conv3–conv5 at 7x7, pool 256x6x6, 9,216.
# - alexnet_cifar_hires, alexnet_cifar_fast: models.py's design, 32 → 16 → 8 → 4, FC6 sees 256x4x4 = 4,096.
# - alexnet_cifar_air: its notes in models.py: 2x2 conv1 of 24 (32 → 31), then 64, 256, 256, 256 pooled at conv2,
#   conv3 and conv5 (31 → 15 → 7 → 3), a global max-pool and fc6 of 256 → 10.
# - alexnet_fashion: d2l's MXNet AlexNet on 1x224x224: 54, 26, 12, 5, FC6 sees 6,400.
# "flatten" is what fc6 (the first Linear) takes in. Layers not listed (ReLU, LRN, BatchNorm, Dropout, an identity
# avgpool) must keep their input's shape: the test checks that too, so every layer's shape is accounted for.
PAPER_227 = {
    "conv1": (96, 55, 55), "pool1": (96, 27, 27), "conv2": (256, 27, 27), "pool2": (256, 13, 13),
    "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
    "flatten": (9216,), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
}
CIFAR_HIRES_32 = {
    "conv1": (64, 32, 32), "pool1": (64, 16, 16), "conv2": (192, 16, 16), "pool2": (192, 8, 8),
    "conv3": (384, 8, 8), "conv4": (256, 8, 8), "conv5": (256, 8, 8), "pool5": (256, 4, 4),
    "flatten": (4096,), "fc6": (1024,), "fc7": (512,), "fc8": (10,),
}
SOURCE_SHAPES = {
    "alexnet": PAPER_227,
    "alexnet_grouped": PAPER_227,
    "alexnet_torchvision": {
        "conv1": (64, 55, 55), "pool1": (64, 27, 27), "conv2": (192, 27, 27), "pool2": (192, 13, 13),
        "conv3": (384, 13, 13), "conv4": (256, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
        "avgpool": (256, 6, 6), "flatten": (9216,), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
    },
    "alexnet_flowers": {
        "conv1": (48, 55, 55), "pool1": (48, 27, 27), "conv2": (128, 27, 27), "pool2": (128, 13, 13),
        "conv3": (192, 13, 13), "conv4": (192, 13, 13), "conv5": (128, 13, 13), "pool5": (128, 6, 6),
        "flatten": (4608,), "fc6": (2048,), "fc7": (2048,), "fc8": (5,),
    },
    "alexnet_cifar": {
        "conv1": (96, 15, 15), "pool1": (96, 7, 7), "conv2": (256, 7, 7), "pool2": (256, 3, 3),
        "conv3": (384, 3, 3), "conv4": (384, 3, 3), "conv5": (256, 3, 3),
        "flatten": (2304,), "fc6": (1024,), "fc7": (512,), "fc8": (10,),
    },
    "alexnet_cifar_small": {
        "conv1": (64, 28, 28), "pool1": (64, 13, 13), "conv2": (64, 9, 9), "pool2": (64, 4, 4),
        "flatten": (1024,), "fc3": (384,), "fc4": (192,), "fc5": (10,),
    },
    "alexnet_cifar_npu": {
        "conv1": (64, 15, 15), "pool1": (64, 14, 14), "conv2": (256, 14, 14), "pool2": (256, 7, 7),
        "conv3": (384, 7, 7), "conv4": (384, 7, 7), "conv5": (256, 7, 7), "pool5": (256, 6, 6),
        "flatten": (9216,), "fc6": (4608,), "fc7": (4608,), "fc8": (10,),
    },
    "alexnet_cifar_hires": CIFAR_HIRES_32,
    "alexnet_cifar_fast": CIFAR_HIRES_32,
    "alexnet_cifar_air": {
        "conv1": (24, 31, 31), "conv2": (64, 31, 31), "pool2": (64, 15, 15), "conv3": (256, 15, 15),
        "pool3": (256, 7, 7), "conv4": (256, 7, 7), "conv5": (256, 7, 7), "pool5": (256, 3, 3),
        "avgpool": (256, 1, 1), "flatten": (256,), "fc6": (10,),
    },
    "alexnet_fashion": {
        "conv1": (96, 54, 54), "pool1": (96, 26, 26), "conv2": (256, 26, 26), "pool2": (256, 12, 12),
        "conv3": (384, 12, 12), "conv4": (384, 12, 12), "conv5": (256, 12, 12), "pool5": (256, 5, 5),
        "flatten": (6400,), "fc6": (4096,), "fc7": (4096,), "fc8": (10,),
    },
}


def meta_model(name: str, **options) -> nn.Module:
    """Shapes only: big nets are built without allocating their weights."""
    with torch.device("meta"):
        return build_model(name, **options)


def test_registry_lists_every_variant():
    assert set(MODELS) == set(EXPECTED_PARAMS) == set(SOURCE_SHAPES)
    assert all(spec.name == name for name, spec in MODELS.items())


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_param_count_at_default_classes(name):
    assert count_params(meta_model(name)) == EXPECTED_PARAMS[name]


def layer_shapes(name: str) -> list[tuple[str, tuple, tuple]]:
    """(layer, input shape, output shape) of every layer in forward order, batch left out, at the variant's own
    input size; run on the meta device, so even the 67 M parameter nets cost no memory."""
    spec = get_spec(name)
    model = meta_model(name).eval()
    seen = []
    for layer_name, layer in model.named_modules():
        if layer_name and not list(layer.children()):
            short = layer_name.rsplit(".", 1)[-1]
            layer.register_forward_hook(lambda _, inputs, output, short=short: seen.append(
                (short, tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))))
    with torch.device("meta"):
        model(torch.empty(1, spec.in_channels, spec.input_size, spec.input_size))
    return seen


@pytest.mark.parametrize("name", list(SOURCE_SHAPES))
def test_every_layer_has_the_shape_its_source_states(name):
    expected = SOURCE_SHAPES[name]
    seen = layer_shapes(name)
    stated = {layer: output for layer, _, output in seen if layer in expected}
    first_linear = next(inputs for layer, inputs, _ in seen if layer.startswith("fc"))
    assert {**stated, "flatten": first_linear} == expected
    for layer, inputs, output in seen:
        if layer.startswith(("conv", "pool", "fc")):
            assert layer in expected, f"{name}'s {layer} has no stated shape"
        elif layer not in expected:           # ReLU, LRN, BatchNorm, Dropout, an identity avgpool
            assert output == inputs, f"{name}'s {layer} changes {inputs} to {output}"


def test_paper_param_count_by_hand():
    # conv: k·k·cin·cout + cout; fc: fin·fout + fout (alexnet, one tower, 1000 classes)
    convs = [(11, 3, 96), (5, 96, 256), (3, 256, 384), (3, 384, 384), (3, 384, 256)]
    fcs = [(9216, 4096), (4096, 4096), (4096, 1000)]
    by_hand = sum(k * k * a * b + b for k, a, b in convs) + sum(a * b + b for a, b in fcs)
    assert by_hand == count_params(meta_model("alexnet"))


def test_num_classes_changes_only_the_last_layer():
    model = meta_model("alexnet_cifar", num_classes=100)
    assert model.classifier.fc8.out_features == 100
    assert count_params(model) == EXPECTED_PARAMS["alexnet_cifar"] + 90 * 512 + 90


def test_in_channels_changes_only_conv1():
    model = meta_model("alexnet_fashion", in_channels=3)
    assert model.features.conv1.in_channels == 3
    assert count_params(model) == EXPECTED_PARAMS["alexnet_fashion"] + 2 * 11 * 11 * 96


def test_batch_norm_adds_a_bn_after_every_conv_and_drops_conv_biases():
    model = meta_model("alexnet", batch_norm=True)
    names = [name for name, _ in model.features.named_children()]
    for i in range(1, 6):
        assert names.index(f"bn{i}") == names.index(f"conv{i}") + 1
        assert model.features.get_submodule(f"conv{i}").bias is None
    # BN adds 2 parameters per channel; the conv biases it replaces had 1.
    channels = 96 + 256 + 384 + 384 + 256
    assert count_params(model) == EXPECTED_PARAMS["alexnet"] + channels


def test_grouped_alexnet_splits_conv2_conv4_conv5():
    model = meta_model("alexnet_grouped")
    groups = {name: m.groups for name, m in model.features.named_children() if isinstance(m, nn.Conv2d)}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}


@pytest.mark.parametrize("name", ["alexnet_cifar", "alexnet_cifar_small", "alexnet_cifar_npu"])
def test_small_nets_run_a_real_forward_and_backward_pass(name):
    torch.manual_seed(0)
    spec = get_spec(name)
    model = build_model(name, batch_norm=True)
    x = torch.randn(2, spec.in_channels, spec.input_size, spec.input_size)
    logits = model(x)
    assert logits.shape == (2, spec.num_classes)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert model.features.conv1.weight.grad is not None


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown model 'alexnet9'.*alexnet_cifar"):
        build_model("alexnet9")


def test_alexnet_torchvision_takes_torchvisions_weights():
    torch.manual_seed(0)
    theirs = torchvision.models.alexnet().eval()
    ours = build_model("alexnet_torchvision").eval()
    # Same tensors in the same order; only the names differ (features.0 vs features.conv1).
    their_state = theirs.state_dict()
    assert [t.shape for t in ours.state_dict().values()] == [t.shape for t in their_state.values()]
    ours.load_state_dict(dict(zip(ours.state_dict(), their_state.values())))
    x = torch.randn(1, 3, 63, 63)  # the smallest input both take: keeps the check fast
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_hires_has_batch_norm_by_design_and_can_drop_it():
    with_bn = meta_model("alexnet_cifar_hires")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 5
    without = meta_model("alexnet_cifar_hires", batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    bn_params = 2 * (64 + 192 + 384 + 256 + 256)     # gamma and beta of each BatchNorm
    conv_biases = 64 + 192 + 384 + 256 + 256          # back without BatchNorm
    assert count_params(without) == EXPECTED_PARAMS["alexnet_cifar_hires"] - bn_params + conv_biases


def test_fast_pools_before_batch_norm_and_computes_what_hires_does_while_bn_scales_are_positive():
    hires, fast = build_model("alexnet_cifar_hires").eval(), build_model("alexnet_cifar_fast").eval()
    names = list(dict(fast.features.named_children()))
    assert names[:4] == ["conv1", "pool1", "bn1", "relu1"] and names[-4:] == ["conv5", "pool5", "bn5", "relu5"]
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in hires.state_dict().items()}
    torch.manual_seed(0)
    for bn in (m for m in hires.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.weight.data.uniform_(0.5, 2.0)                 # positive scales: BN is increasing, so max-pool commutes
        bn.bias.data.normal_()
        bn.running_mean.normal_()
    fast.load_state_dict(hires.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), hires(x))
        hires.features.bn1.weight.data[0] = -1.0      # a negative scale turns max into min: they now differ
        fast.load_state_dict(hires.state_dict())
        assert not torch.allclose(fast.features[:4](x), hires.features[:4](x))


def test_whitening_decorrelates_conv1_outputs_and_keeps_the_other_filters():
    from alexnet_core.models import first_conv, whiten_conv_

    torch.manual_seed(0)
    # Smooth, correlated images: upsampled noise, so neighbouring pixels and channels covary strongly.
    smooth = nn.functional.interpolate(torch.randn(64, 3, 8, 8), size=32, mode="bilinear")
    images = smooth + 0.3 * torch.randn(64, 1, 32, 32)
    conv = first_conv(build_model("alexnet_cifar_hires"))
    before = conv.weight.detach().clone()
    assert whiten_conv_(conv, images, eps=1e-8) == 54          # 3x3x3 = 27 directions, each with both signs
    patches = nn.functional.unfold(images, 3).transpose(1, 2).reshape(-1, 27)
    outputs = patches @ conv.weight[:27].reshape(27, 27).T
    covariance = outputs.T @ outputs / len(outputs)
    assert torch.allclose(covariance, torch.eye(27), atol=1e-3), "whitened outputs must be uncorrelated, unit variance"
    assert torch.equal(conv.weight[27:54], -conv.weight[:27])
    assert torch.equal(conv.weight[54:], before[54:])             # beyond 2 x 27 filters: the random start


def test_whitening_refuses_a_grouped_conv():
    from alexnet_core.models import whiten_conv_

    with pytest.raises(ValueError, match="groups"):
        whiten_conv_(nn.Conv2d(4, 8, 3, groups=2), torch.randn(2, 4, 8, 8))


def test_the_layer_order_bench_times_both_orders():
    """bench/layer_order.py, which measures alexnet_cifar_fast's speed-up, runs and reports both models."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.layer_order", "--batch-size", "4", "--rounds", "1", "--steps", "1",
         "--device", "cpu", "--json"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    result = json.loads(out)
    assert set(result["images_per_s"]) == {"alexnet_cifar_hires", "alexnet_cifar_fast"}
    assert all(speed > 0 for speed in result["images_per_s"].values()) and result["speedup"] > 0


def test_air_starts_each_conv_as_an_identity_and_scales_its_logits_by_a_ninth():
    from alexnet_core.models import ScaledLinear

    model = build_model("alexnet_cifar_air")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(2, 2)] + [(3, 3)] * 4
    for conv in convs[1:]:   # dirac: output channel i passes input channel i through its centre tap
        kept = min(conv.in_channels, conv.out_channels)
        identity = torch.zeros(kept, conv.in_channels, 3, 3)
        identity[torch.arange(kept), torch.arange(kept), 1, 1] = 1
        assert torch.equal(conv.weight[:kept].detach(), identity)
        if conv.out_channels > kept:  # the widening convs keep their random start in the channels beyond
            assert conv.weight[kept:].detach().abs().sum() > 0
    fc = model.classifier.fc6
    assert isinstance(fc, ScaledLinear) and fc.bias is None
    x = torch.randn(4, 256)
    assert torch.allclose(fc(x), (x @ fc.weight.T) / 9)


def test_whitening_sets_every_filter_of_the_air_nets_2x2_conv1():
    from alexnet_core.models import first_conv, whiten_conv_

    conv = first_conv(build_model("alexnet_cifar_air"))
    images = torch.randn(64, 3, 32, 32) * torch.tensor([1.0, 0.5, 2.0])[:, None, None]
    assert whiten_conv_(conv, images) == 24 == conv.out_channels   # 3 channels x 2 x 2, with both signs
