"""Figures for the app and the docs, drawn with matplotlib's object-oriented API (no pyplot state).

Each function takes library results (a Summary, …) and returns a ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to images by the app or saved to files

from matplotlib.figure import Figure  # noqa: E402

from .summary import Summary  # noqa: E402

# Layers that change the shape of the feature maps; ReLU, LRN, BatchNorm and dropout leave it alone.
_SHAPE_CHANGING = ("Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d")


def shape_plot(summary: Summary) -> Figure:
    """How the spatial side shrinks (top) and the channel count grows (bottom), layer by layer."""
    _, channels, side, _ = summary.input_shape
    names, sides, widths = ["input"], [side], [channels]
    for row in summary.layers:
        if row.type in _SHAPE_CHANGING:
            names.append(row.name)
            widths.append(row.output_shape[1])
            sides.append(row.output_shape[2])

    figure = Figure(figsize=(8, 5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    x = range(len(names))

    top.plot(x, sides, marker="o", color="tab:blue")
    for i, value in zip(x, sides):
        top.annotate(f"{value}×{value}", (i, value), textcoords="offset points", xytext=(0, 6),
                     ha="center", fontsize=8)
    top.set_ylabel("spatial side (pixels)")
    top.set_ylim(0, max(sides) * 1.2)
    top.grid(alpha=0.3)

    bottom.bar(x, widths, color="tab:orange")
    for i, value in zip(x, widths):
        bottom.annotate(f"{value}", (i, value), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=8)
    bottom.set_ylabel("channels")
    bottom.set_ylim(0, max(widths) * 1.2)
    bottom.set_xticks(list(x), names, rotation=45, ha="right")
    bottom.grid(axis="y", alpha=0.3)

    flatten = next((row for row in summary.layers if row.name == "flatten"), None)
    flat = f", flattened to {flatten.output_shape[1]:,} values" if flatten else ""
    figure.suptitle(f"{summary.model} at {side}×{side}{flat}")
    return figure
