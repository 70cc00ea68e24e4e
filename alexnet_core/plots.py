"""Figures for the app and the docs, drawn with matplotlib's object-oriented API (no pyplot state).

Each function takes library results (a Summary, an EvalResult, …) and returns a ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to images by the app or saved to files

from matplotlib.figure import Figure  # noqa: E402

from .summary import Summary  # noqa: E402

if TYPE_CHECKING:
    from .evaluate import EvalResult

# Above these class counts the confusion matrix leaves out the numbers in its cells, then the class names.
CELL_TEXT_MAX_CLASSES = 20
TICK_LABEL_MAX_CLASSES = 50
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


def confusion_plot(result: EvalResult) -> Figure:
    """The confusion matrix of an evaluation as a heat map (``confusion_counts_plot``)."""
    return confusion_counts_plot(result.confusion().numpy(), result.classes,
                                 f"{result.accuracy:.1%} correct of {result.n:,} images")


def confusion_counts_plot(counts, classes: list[str], title: str) -> Figure:
    """A confusion matrix ``counts[true, predicted]`` as a heat map: true classes down, predicted classes across,
    counts in the cells.

    Colours follow each true class's share (its row divided by its count), so that classes with few images
    are as readable as large ones; the cells show the counts themselves.
    """
    rows = counts.sum(axis=1, keepdims=True)
    shares = counts / rows.clip(min=1)
    k = len(classes)
    side = min(3 + 0.45 * k, 14)
    figure = Figure(figsize=(side + 1, side), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of the true class", shrink=0.8)
    if k <= TICK_LABEL_MAX_CLASSES:
        axes.set_xticks(range(k), classes, rotation=45, ha="right")
        axes.set_yticks(range(k), classes)
    if k <= CELL_TEXT_MAX_CLASSES:
        for true in range(k):
            for predicted in range(k):
                # White text on the dark cells, black on the light ones.
                colour = "white" if shares[true, predicted] > 0.5 else "black"
                axes.text(predicted, true, f"{counts[true, predicted]:,}", ha="center", va="center",
                          color=colour, fontsize=8 if k > 10 else 10)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return figure
