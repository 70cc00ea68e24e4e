"""The shape arithmetic of the variants, in plain integers: whether an input size fits a variant, and why not
in one sentence (``check_fit``, ``SizeError``), which sizes fit (``fitting_sizes``), and each layer's output
side, receptive field and arithmetic (``walk``). No tensors are run and torchinfo is not imported, so the
checks are cheap wherever they are needed (settings, checkpoints, the app's forms); summary.py builds the
torchinfo tables on top of this.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from .models import get_spec

# The largest input side AlexNet Studio takes anywhere: settings, checkpoints and forms.
MAX_INPUT_SIZE = 1024
# Layers that leave the spatial size and the channel count alone.
SHAPE_PRESERVING = (nn.ReLU, nn.LocalResponseNorm, nn.BatchNorm2d, nn.Dropout, nn.Identity)


class SizeError(ValueError):
    """An input size a variant cannot take; the message is one sentence with a hint."""


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
    if isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _Geometry(name, "adaptive", out_size=_first(layer.output_size))
    if isinstance(layer, SHAPE_PRESERVING):
        return _Geometry(name, "same")
    raise TypeError(f"geometry.py does not know how {type(layer).__name__} ({name}) changes shapes")


@cache
def architecture(model: str) -> tuple[tuple[_Geometry, ...], str, int]:
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


def walk(geometry: tuple[_Geometry, ...], side: int, channels: int) -> list[_Step]:
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
    geometry, _, expected = architecture(model)
    if conv1_padding is not None:
        geometry = (dataclasses.replace(geometry[0], padding=conv1_padding), *geometry[1:])
    last = walk(geometry, side, get_spec(model).in_channels)[-1]
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
        return f"no input size up to {MAX_INPUT_SIZE} fits"
    if spec.input_size in sizes:
        hint = f"use {spec.input_size}"
        if len(sizes) > 1:
            hint += f" (any of {_ranges(sizes)} fits)"
    else:
        hint = f"use one of {_ranges(sizes)}"
    # Would padding conv1 make this very size fit? That is torchvision's fix for the paper's 224.
    geometry, _, _ = architecture(model)
    conv1 = geometry[0]
    if conv1.kind == "window" and conv1.padding == 0:
        padding = next((p for p in range(1, conv1.kernel // 2 + 1) if _fits(model, side, p)), None)
        if padding is not None:
            hint += f", or pad {conv1.name} by {padding}"
            if padding == architecture("alexnet_torchvision")[0][0].padding:
                hint += " as torchvision does (alexnet_torchvision)"
    return hint


def check_fit(model: str, input_size: int) -> int:
    """Returns the size as an int if the variant can take it, else raises SizeError (one sentence)."""
    side = _check_size_value(input_size)
    geometry, fc_name, expected = architecture(model)
    last = walk(geometry, side, get_spec(model).in_channels)[-1]
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
