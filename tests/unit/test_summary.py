"""Summaries against the tutorials' printed tables, torchinfo and flop_counter, and the fit check."""

import json
import time

import pytest

from alexnet_core import summary as summary_module
from alexnet_core.geometry import SizeError, check_fit, fitting_sizes
from alexnet_core.models import MODELS
from alexnet_core.plots import shape_plot
from alexnet_core.summary import format_table, summarize, to_json


def shapes(model: str, size: int, names: list[str]) -> list[list[int]]:
    rows = {row.name: row for row in summarize(model, size).layers}
    return [rows[name].output_shape[1:] for name in names]


def test_paddle_cifar_table():
    # The PaddlePaddle tutorial's paddle.summary of its CIFAR-10 AlexNet at 32x32.
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5"]
    assert shapes("alexnet_cifar", 32, names) == [
        [96, 15, 15], [96, 7, 7], [256, 7, 7], [256, 3, 3], [384, 3, 3], [384, 3, 3], [256, 3, 3]
    ]


def test_ascend_npu_shapes():
    # The Ascend tutorial's comments on its CIFAR-10 AlexNet at 32x32: conv1 4x4/2 without padding.
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    assert shapes("alexnet_cifar_npu", 32, names) == [
        [64, 15, 15], [64, 14, 14], [256, 14, 14], [256, 7, 7], [384, 7, 7], [384, 7, 7], [256, 7, 7], [256, 6, 6]
    ]
    rows = {row.name: row for row in summarize("alexnet_cifar_npu", 32).layers}
    assert rows["flatten"].output_shape == [1, 9216]


def test_mxnet_fashion_shapes():
    # d2l's MXNet AlexNet on a 1x224x224 Fashion-MNIST input.
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    assert shapes("alexnet_fashion", 224, names) == [
        [96, 54, 54], [96, 26, 26], [256, 26, 26], [256, 12, 12], [384, 12, 12], [384, 12, 12],
        [256, 12, 12], [256, 5, 5]
    ]
    rows = {row.name: row for row in summarize("alexnet_fashion", 224).layers}
    assert rows["flatten"].output_shape == [1, 6400]


def test_paper_sides_at_227():
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    assert [shape[1] for shape in shapes("alexnet", 227, names)] == [55, 27, 27, 13, 13, 13, 13, 6]


def test_rows_follow_the_forward_pass():
    s = summarize("alexnet_torchvision", 224)
    names = [row.name for row in s.layers]
    assert names.index("pool5") < names.index("avgpool") < names.index("flatten") < names.index("fc6")
    assert s.input_shape == [1, 3, 224, 224]
    assert s.layers[-1].output_shape == [1, 1000]
    # avgpool is an Identity in the paper's net: it has no row there.
    assert "avgpool" not in [row.name for row in summarize("alexnet", 227).layers]


def test_torchvision_macs_and_flop_counter_cross_check():
    s = summarize("alexnet_torchvision", 224)
    assert s.total_macs == 714_682_664  # torchinfo's figure
    assert s.total_params == 61_100_840
    assert sum(row.macs for row in s.layers) == s.total_macs
    assert sum(row.flops for row in s.layers) == s.total_flops
    # flop_counter counts 2 FLOPs per multiply-accumulate and ignores the bias that torchinfo adds once
    # per output value.
    for row in s.layers:
        if row.type in ("Conv2d", "Linear"):
            outputs_per_bias = row.output_shape[2] * row.output_shape[3] if row.type == "Conv2d" else 1
            bias_adds = row.output_shape[1] * outputs_per_bias
            assert row.flops == 2 * (row.macs - bias_adds), row.name


def test_without_conv_biases_flops_are_twice_the_macs():
    s = summarize("alexnet", 227, batch_norm=True)  # BatchNorm makes conv biases redundant
    convs = [row for row in s.layers if row.type == "Conv2d"]
    assert len(convs) == 5
    assert all(row.flops == 2 * row.macs for row in convs)


def test_conv1_macs_by_hand():
    row = summarize("alexnet", 227).layers[0]
    assert row.name == "conv1"
    assert row.macs == (11 * 11 * 3 * 96 + 96) * 55 * 55
    assert row.params == 11 * 11 * 3 * 96 + 96


def test_receptive_fields_by_the_formula():
    # rf_out = rf_in + (k − 1) · jump_in, jump_out = jump_in · stride
    rows = {row.name: row for row in summarize("alexnet", 227).layers}
    assert rows["conv1"].receptive_field == 11 and rows["conv1"].stride_total == 4
    assert rows["pool1"].receptive_field == 11 + 2 * 4 == 19 and rows["pool1"].stride_total == 8
    assert rows["conv2"].receptive_field == 19 + 4 * 8 == 51
    assert rows["pool2"].receptive_field == 51 + 2 * 8 == 67 and rows["pool2"].stride_total == 16
    assert rows["conv5"].receptive_field == 67 + 3 * 2 * 16 == 163
    assert rows["pool5"].receptive_field == 163 + 2 * 16 == 195
    # Shape-preserving layers keep it, fully connected layers see the whole input.
    assert rows["relu1"].receptive_field == rows["lrn1"].receptive_field == 11
    assert rows["fc6"].receptive_field == rows["fc8"].receptive_field == 227


def test_arithmetic_strings():
    rows = {row.name: row for row in summarize("alexnet", 227).layers}
    assert rows["conv1"].arithmetic == "(227 − 11 + 2·0) / 4 + 1 = 55"
    assert rows["conv2"].arithmetic == "(27 − 5 + 2·2) / 1 + 1 = 27"
    assert rows["relu1"].arithmetic == "" and rows["fc6"].arithmetic == ""
    tv = {row.name: row for row in summarize("alexnet_torchvision", 224).layers}
    assert tv["conv1"].arithmetic == "(224 − 11 + 2·2) / 4 + 1 = 55.25 → 55"
    assert tv["avgpool"].arithmetic.startswith("adaptive: 6 → 6")
    fashion = {row.name: row for row in summarize("alexnet_fashion", 224).layers}
    assert fashion["conv1"].arithmetic == "(224 − 11 + 2·0) / 4 + 1 = 54.25 → 54"


def test_alexnet_at_32_names_the_layer_that_shrinks_below_1x1():
    with pytest.raises(SizeError) as caught:
        summarize("alexnet", 32)
    message = str(caught.value)
    assert "pool2" in message and "below 1x1" in message
    assert "(2 − 3 + 2·0) / 2 + 1 = 0.5 → 0" in message
    assert "227" in message and "\n" not in message


def test_alexnet_at_224_explains_the_flatten_mismatch():
    with pytest.raises(SizeError) as caught:
        summarize("alexnet", 224)
    message = str(caught.value)
    for part in ("256x5x5 = 6,400", "fc6 expects 9,216", "227", "pad conv1 by 2", "alexnet_torchvision"):
        assert part in message
    assert message.count(".") == 1 and message.endswith(".")  # one sentence


def test_hint_names_the_sizes_that_fit():
    assert fitting_sizes("alexnet")[0] == 227
    assert fitting_sizes("alexnet_torchvision") == tuple(range(63, 1025))
    assert 32 in fitting_sizes("alexnet_cifar") and 224 not in fitting_sizes("alexnet_cifar")
    with pytest.raises(SizeError, match="63–1024"):
        check_fit("alexnet_torchvision", 62)
    # Every size the search calls fitting really runs (meta device), and the one below does not.
    assert summarize("alexnet_torchvision", 63).layers[-1].output_shape == [1, 1000]


@pytest.mark.parametrize("bad", [0, -5, 1025, 32.5, "32", True])
def test_nonsense_sizes_are_rejected_with_a_sentence(bad):
    with pytest.raises(SizeError, match="whole number of pixels from 1 to 1024"):
        summarize("alexnet_cifar", bad)


def test_whole_float_sizes_are_accepted():
    assert summarize("alexnet_cifar", 32.0).input_shape == [1, 3, 32, 32]


def test_options_reach_the_summary():
    s = summarize("alexnet_cifar", 32, batch_norm=True, num_classes=100, in_channels=1)
    assert s.input_shape == [1, 1, 32, 32]
    assert s.layers[-1].output_shape == [1, 100]
    assert "bn1" in [row.name for row in s.layers]
    with pytest.raises(ValueError, match="number of classes"):
        summarize("alexnet_cifar", 32, num_classes=-1)


def test_every_variant_fits_its_own_size_quickly():
    summarize("alexnet_cifar_small", 32)  # the first meta pass sets PyTorch up; not what we time
    summary_module._summarize.cache_clear()
    for name, spec in MODELS.items():
        start = time.perf_counter()
        s = summarize(name, spec.input_size, batch_norm=True)
        assert time.perf_counter() - start < 1.0, name
        assert s.layers[-1].output_shape == [1, spec.num_classes]


def test_json_schema():
    data = to_json(summarize("alexnet_cifar", 32))
    json.dumps(data)  # plain types only
    assert {"model", "input_shape", "layers", "total_params", "total_macs"} <= set(data)
    assert data["model"] == "alexnet_cifar" and data["input_shape"] == [1, 3, 32, 32]
    assert data["total_params"] == 6_616_714
    for layer in data["layers"]:
        assert {"name", "type", "output_shape", "params", "macs", "receptive_field", "arithmetic"} <= set(layer)
        assert isinstance(layer["output_shape"], list) and layer["output_shape"][0] == 1
    assert sum(layer["params"] for layer in data["layers"]) == data["total_params"]


def test_format_table_has_every_layer_and_the_totals():
    s = summarize("alexnet", 227)
    table = format_table(s)
    for row in s.layers:
        assert row.name in table
    assert "(227 − 11 + 2·0) / 4 + 1 = 55" in table
    assert "Total params: 62,378,344" in table
    assert f"Total MACs: {s.total_macs:,}" in table


def test_shape_plot_shows_sides_and_channels():
    s = summarize("alexnet_cifar", 32)
    figure = shape_plot(s)
    top, bottom = figure.axes
    assert list(top.lines[0].get_ydata()) == [32, 15, 7, 7, 3, 3, 3, 3]
    assert [bar.get_height() for bar in bottom.patches] == [3, 96, 96, 256, 256, 384, 384, 256]
    labels = [label.get_text() for label in bottom.get_xticklabels()]
    assert labels == ["input", "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5"]
