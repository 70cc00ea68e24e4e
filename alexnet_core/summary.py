"""Exact layer-by-layer summaries of the variants: shapes, parameters, MACs, receptive fields, and the
output-size arithmetic of every convolution and pool.

Two sources, each doing what it is good at:

* geometry.py's analytic walk over the layers' kernels, strides and paddings (plain integers, no tensors) checks
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
from functools import lru_cache

import torch
import torchinfo
from torch.utils.flop_counter import FlopCounterMode

from .checkpoints import MAX_CLASSES
from .geometry import architecture, check_fit, walk
from .models import get_spec


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


# --- The summary --------------------------------------------------------------------------------------


def summarize(model: str, input_size: int, *, batch_norm: bool | None = None, num_classes: int | None = None,
              in_channels: int | None = None) -> Summary:
    """The exact summary of a variant at ``input_size``; raises geometry.SizeError if the size does not fit."""
    side = check_fit(model, input_size)
    spec = get_spec(model)
    # The bounds a checkpoint's metadata has (checkpoints.py): a summary builds no model those would refuse.
    for label, count, most in (("number of classes", num_classes, MAX_CLASSES),
                               ("number of input channels", in_channels, 3)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= most):
            raise ValueError(f"The {label} must be a whole number from 1 to {most:,}, not {count!r}.")
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

    geometry, _, _ = architecture(model)
    steps = {step.name: step for step in walk(geometry, side, in_channels)}
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
