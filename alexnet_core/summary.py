"""Exact layer-by-layer summaries of the variants: shapes, parameters, MACs, receptive fields, and the
output-size arithmetic of every convolution and pool.

Two sources, each doing what it is good at:

* an analytic walk over the layers' kernels, strides and paddings (plain integers, no tensors) checks
  whether an input size fits *before* anything runs, explains why not in one sentence, and gives the
  receptive field and the arithmetic of every row;
* torchinfo runs the real model on the meta device (shapes only, no memory, ~20 ms) for output shapes,
  parameters and MACs, and torch.utils.flop_counter counts FLOPs on the same pass as a cross-check.

MACs are torchinfo's: a convolution's count includes one add per output for the bias, and BatchNorm
counts its weight and bias. flop_counter counts 2 FLOPs per multiply-accumulate and ignores biases, so
for a convolution or linear layer ``flops == 2 * (macs - outputs)`` with a bias and ``2 * macs`` without.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cache, lru_cache

import torch
import torchinfo
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import get_spec

MAX_INPUT_SIZE = 1024
# Layers that leave the spatial size and the channel count alone.
SHAPE_PRESERVING = (nn.ReLU, nn.LocalResponseNorm, nn.BatchNorm2d, nn.Dropout, nn.Identity)


class SizeError(ValueError):
    """An input size a variant cannot take; the message is one sentence with a hint."""


@dataclass(frozen=True)
class LayerRow:
    name: str  # conv1, pool1, flatten, fc6 … as in models.py
    type: str  # the module's class name: Conv2d, MaxPool2d, Linear …
    output_shape: list[int]  # with the batch dimension, e.g. [1, 96, 55, 55]
    params: int
    macs: int
    flops: int  # flop_counter's count for this layer (0 for layers it does not count)
    receptive_field: int  # side in input pixels that one output unit sees; FC layers see the whole input
    stride_total: int  # input pixels between neighbouring output units ("jump")
    arithmetic: str  # "(227 − 11 + 2·0) / 4 + 1 = 55" for convs and pools, "" otherwise


@dataclass(frozen=True)
class Summary:
    """A summary is cached and shared: treat it (and its lists) as read-only."""

    model: str
    input_shape: list[int]  # [1, C, H, W]
    layers: list[LayerRow]
    total_params: int
    total_macs: int
    total_flops: int
    batch_norm: bool
    num_classes: int
    in_channels: int


# --- The analytic walk ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """What the walk needs to know about one layer of ``features`` (or the ``avgpool``)."""

    name: str
    kind: str  # "window" (conv or pool), "adaptive" or "same"
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    out_channels: int | None = None  # set for convolutions
    out_size: int | None = None  # set for adaptive pools


@dataclass(frozen=True)
class _Step:
    name: str
    side_in: int
    side: int  # output side; below 1 means the input was too small
    channels: int
    receptive_field: int
    jump: int
    arithmetic: str


def _first(value: int | tuple[int, ...]) -> int:
    # Every layer here is square, so one side says it all.
    return value[0] if isinstance(value, tuple) else value


def _geometry_of(name: str, layer: nn.Module) -> _Geometry:
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        if getattr(layer, "ceil_mode", False) or _first(getattr(layer, "dilation", 1)) != 1:
            raise NotImplementedError(f"{name}: the walk does not handle ceil_mode or dilation")
        return _Geometry(
            name, "window", _first(layer.kernel_size), _first(layer.stride), _first(layer.padding),
            out_channels=layer.out_channels if isinstance(layer, nn.Conv2d) else None,
        )
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return _Geometry(name, "adaptive", out_size=_first(layer.output_size))
    if isinstance(layer, SHAPE_PRESERVING):
        return _Geometry(name, "same")
    raise TypeError(f"summary.py does not know how {type(layer).__name__} ({name}) changes shapes")


@cache
def _architecture(model: str) -> tuple[tuple[_Geometry, ...], str, int]:
    """The layers' geometry (features, then avgpool), the first Linear's name and its in_features."""
    with torch.device("meta"):
        net = get_spec(model).build()
    layers = [*net.features.named_children(), ("avgpool", net.avgpool)]
    geometry = tuple(_geometry_of(name, layer) for name, layer in layers)
    fc_name, fc = next((n, m) for n, m in net.classifier.named_children() if isinstance(m, nn.Linear))
    return geometry, fc_name, fc.in_features


def _number(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _window_arithmetic(side: int, g: _Geometry) -> tuple[int, str]:
    """PyTorch's floor((n − k + 2p) / s) + 1, and the sum as a reader would write it."""
    out = (side - g.kernel + 2 * g.padding) // g.stride + 1
    exact = (side - g.kernel + 2 * g.padding) / g.stride + 1
    text = f"({side} − {g.kernel} + 2·{g.padding}) / {g.stride} + 1 = {_number(exact)}"
    return out, text if exact == out else f"{text} → {out}"


def _adaptive_windows(side: int, out: int) -> tuple[int, int]:
    """Smallest and largest window of an adaptive pool (PyTorch's floor/ceil split of the input)."""
    sizes = [math.ceil((i + 1) * side / out) - (i * side) // out for i in range(out)]
    return min(sizes), max(sizes)


def _walk(geometry: tuple[_Geometry, ...], side: int, channels: int) -> list[_Step]:
    """Follows an input of ``side`` pixels through the layers; stops at the first that leaves < 1x1.

    Receptive field and jump use the usual recurrence: rf += (k − 1) · jump, jump *= stride.
    """
    steps: list[_Step] = []
    rf, jump = 1, 1
    for g in geometry:
        arithmetic = ""
        if g.kind == "window":
            out, arithmetic = _window_arithmetic(side, g)
            rf, jump = rf + (g.kernel - 1) * jump, jump * g.stride
            channels = g.out_channels or channels
        elif g.kind == "adaptive":
            out = g.out_size
            smallest, largest = _adaptive_windows(side, out)
            windows = f"{largest}" if smallest == largest else f"{smallest}–{largest}"
            arithmetic = f"adaptive: {side} → {out} (windows of {windows})"
            # Windows vary in size: count the largest, and the average stride rounded down.
            rf, jump = rf + (largest - 1) * jump, jump * max(1, side // out)
        else:
            out = side
        steps.append(_Step(g.name, side, out, channels, rf, jump, arithmetic))
        if out < 1:
            break
        side = out
    return steps


# --- Checking a size ----------------------------------------------------------------------------------


def _check_size_value(input_size: object) -> int:
    whole = isinstance(input_size, int) or (isinstance(input_size, float) and input_size.is_integer())
    if isinstance(input_size, bool) or not whole or not 1 <= input_size <= MAX_INPUT_SIZE:
        raise SizeError(
            f"The input size must be a whole number of pixels from 1 to {MAX_INPUT_SIZE}, "
            f"not {input_size!r}."
        )
    return int(input_size)


def _fits(model: str, side: int, conv1_padding: int | None = None) -> bool:
    geometry, _, expected = _architecture(model)
    if conv1_padding is not None:
        geometry = (dataclasses.replace(geometry[0], padding=conv1_padding), *geometry[1:])
    last = _walk(geometry, side, get_spec(model).in_channels)[-1]
    return last.side >= 1 and last.channels * last.side**2 == expected


@cache
def fitting_sizes(model: str) -> tuple[int, ...]:
    """Every input size from 1 to MAX_INPUT_SIZE that the variant takes (a cheap analytic search)."""
    return tuple(n for n in range(1, MAX_INPUT_SIZE + 1) if _fits(model, n))


def _ranges(sizes: tuple[int, ...], most: int = 3) -> str:
    """(63, 64, …, 1024) → "63–1024"; (32, 33, 40) → "32–33, 40"."""
    runs: list[list[int]] = []
    for n in sizes:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = [f"{a}–{b}" if b > a else f"{a}" for a, b in runs[:most]]
    return ", ".join(text) + (", …" if len(runs) > most else "")


def _hint(model: str, side: int) -> str:
    spec, sizes = get_spec(model), fitting_sizes(model)
    if not sizes:
        return "no input size up to 1024 fits"
    if spec.input_size in sizes:
        hint = f"use {spec.input_size}"
        if len(sizes) > 1:
            hint += f" (any of {_ranges(sizes)} fits)"
    else:
        hint = f"use one of {_ranges(sizes)}"
    # Would padding conv1 make this very size fit? That is torchvision's fix for the paper's 224.
    geometry, _, _ = _architecture(model)
    conv1 = geometry[0]
    if conv1.kind == "window" and conv1.padding == 0:
        padding = next((p for p in range(1, conv1.kernel // 2 + 1) if _fits(model, side, p)), None)
        if padding is not None:
            hint += f", or pad {conv1.name} by {padding}"
            if padding == _architecture("alexnet_torchvision")[0][0].padding:
                hint += " as torchvision does (alexnet_torchvision)"
    return hint


def check_fit(model: str, input_size: int) -> int:
    """Returns the size as an int if the variant can take it, else raises SizeError (one sentence)."""
    side = _check_size_value(input_size)
    geometry, fc_name, expected = _architecture(model)
    last = _walk(geometry, side, get_spec(model).in_channels)[-1]
    start = f"{model} cannot take {side}x{side} inputs"
    if last.side < 1:
        raise SizeError(
            f"{start}: {last.name}'s output shrinks below 1x1 ({last.arithmetic}): {_hint(model, side)}."
        )
    flat = last.channels * last.side**2
    if flat != expected:
        raise SizeError(
            f"{start}: its features flatten to {last.channels}x{last.side}x{last.side} = {flat:,} "
            f"but {fc_name} expects {expected:,}: {_hint(model, side)}."
        )
    return side


# --- The summary --------------------------------------------------------------------------------------


def summarize(model: str, input_size: int, *, batch_norm: bool | None = None, num_classes: int | None = None,
              in_channels: int | None = None) -> Summary:
    """The exact summary of a variant at ``input_size``; raises SizeError if the size does not fit."""
    side = check_fit(model, input_size)
    spec = get_spec(model)
    for label, count in (("number of classes", num_classes), ("number of input channels", in_channels)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"The {label} must be a whole number of at least 1, not {count!r}.")
    batch_norm = spec.batch_norm if batch_norm is None else bool(batch_norm)
    return _summarize(model, side, batch_norm, num_classes or spec.num_classes, in_channels or spec.in_channels)


@lru_cache(maxsize=256)
def _summarize(model: str, side: int, batch_norm: bool, num_classes: int, in_channels: int) -> Summary:
    with torch.device("meta"):
        net = get_spec(model).build(num_classes, in_channels, batch_norm).eval()
    input_shape = [1, in_channels, side, side]
    stats = torchinfo.summary(net, input_size=input_shape, device="meta", verbose=0, mode="eval")
    with FlopCounterMode(display=False) as counter:
        net(torch.empty(input_shape, device="meta"))
    # flop_counter keys are module paths ("AlexNet.features.conv1"); layer names are unique in a model.
    flops = {path.rsplit(".", 1)[-1]: sum(ops.values()) for path, ops in counter.get_flop_counts().items()}

    geometry, _, _ = _architecture(model)
    steps = {step.name: step for step in _walk(geometry, side, in_channels)}
    leaves = [info for info in stats.summary_list if info.is_leaf_layer and info.class_name != "Identity"]
    rows: list[LayerRow] = []
    rf, jump = 1, 1
    for info in leaves:
        if info.parent_info.var_name == "classifier" and len(rows[-1].output_shape) == 4:
            flat = [1, math.prod(rows[-1].output_shape[1:])]
            rows.append(LayerRow("flatten", "Flatten", flat, 0, 0, 0, rf, jump, ""))
        if info.class_name == "Linear":
            rf = jump = side  # from the first fully connected layer on, a unit sees the whole input
        step = steps.get(info.var_name)
        if step is not None:
            # The walk and the real (meta) forward pass must agree on every shape.
            assert [step.channels, step.side, step.side] == info.output_size[1:], info.var_name
            rf, jump = step.receptive_field, step.jump
        rows.append(LayerRow(
            name=info.var_name, type=info.class_name, output_shape=list(info.output_size),
            params=info.num_params, macs=info.macs, flops=flops.get(info.var_name, 0),
            receptive_field=rf, stride_total=jump, arithmetic=step.arithmetic if step else "",
        ))
    return Summary(
        model=model, input_shape=input_shape, layers=rows, total_params=stats.total_params,
        total_macs=stats.total_mult_adds, total_flops=counter.get_total_flops(),
        batch_norm=batch_norm, num_classes=num_classes, in_channels=in_channels,
    )


# --- Output -------------------------------------------------------------------------------------------

TABLE_COLUMNS = ["Layer", "Type", "Output shape", "Params", "MACs", "RF", "Arithmetic"]


def table_rows(summary: Summary, skip_types: tuple[str, ...] = ()) -> list[list[str]]:
    """The rows of the human table as strings (thousands separators), optionally without some types."""
    return [
        [row.name, row.type, str(row.output_shape), f"{row.params:,}", f"{row.macs:,}",
         str(row.receptive_field), row.arithmetic]
        for row in summary.layers if row.type not in skip_types
    ]


def format_table(summary: Summary) -> str:
    """A plain-text table like torchinfo's, with the totals at the bottom."""
    rows = [TABLE_COLUMNS, *table_rows(summary)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    numeric = {3, 4, 5}  # right-align numbers

    def line(row: list[str]) -> str:
        cells = [cell.rjust(w) if i in numeric else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    rule = "=" * (sum(widths) + 2 * (len(widths) - 1))
    title = f"{summary.model}, input {summary.input_shape}" + (", BatchNorm" if summary.batch_norm else "")
    return "\n".join([
        title, rule, line(rows[0]), "-" * len(rule), *(line(r) for r in rows[1:]), rule,
        f"Total params: {summary.total_params:,}",
        f"Total MACs: {summary.total_macs:,}",
        f"Total FLOPs (flop_counter): {summary.total_flops:,}",
    ])


def to_json(summary: Summary) -> dict:
    """A JSON-ready dict: model, input_shape, layers[{name, type, output_shape, params, macs,
    receptive_field, arithmetic, …}], total_params, total_macs (plus a few extra keys)."""
    return dataclasses.asdict(summary)
