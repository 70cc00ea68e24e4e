"""Runs side by side, as TensorBoard overlays them: the validation accuracy and loss of several checkpoints on one
chart, against epoch or against training time, and the settings in which they differ.

Everything comes from each checkpoint's own metadata (the per-epoch history and the config every best checkpoint
keeps), so a run trained here, one from the command line and a shipped checkpoint compare alike; nothing is
loaded but headers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from . import checkpoints  # noqa: E402

X_AXES = ("epoch", "time")
# Settings that say where or how a run was kept, not how it learned: never a difference worth a column.
NOT_COMPARED = ("out", "resume", "device", "workers", "half")


@dataclass
class RunRecord:
    """One run as the comparison shows it."""

    name: str                 # the label in the legend and the table
    history: list[dict]       # one record per validated epoch: epoch, val_acc, val_loss, wall_time_s, …
    config: dict
    best_val_acc: float | None
    model: str


def record_of(path: str | Path, name: str | None = None) -> RunRecord:
    """The run a checkpoint records (checkpoints.CheckpointError for a file that is not one). ``name`` defaults to
    the run's folder for best.safetensors and to the file's name otherwise."""
    path = Path(path)
    meta = checkpoints.read_metadata(path)
    history = [h for h in meta.get("history") or [] if isinstance(h, dict) and _number(h.get("val_acc"))]
    default = path.parent.name if path.stem in ("best", "last") else path.stem
    return RunRecord(name or default, history, dict(meta.get("config") or {}), meta.get("best_val_acc"),
                     str(meta.get("model", "?")))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def differences(records: list[RunRecord]) -> list[str]:
    """The settings whose values are not the same in every run, in the config's own order."""
    names: list[str] = []
    for record in records:
        names += [k for k in record.config if k not in names and k not in NOT_COMPARED]
    return [k for k in names if len({repr(r.config.get(k)) for r in records}) > 1]


def table(records: list[RunRecord]) -> tuple[list[str], list[list]]:
    """(headers, rows): each run's name, best validation accuracy, epochs, training time, then the settings in
    which the runs differ."""
    differ = differences(records)
    headers = ["run", "best val acc", "epochs trained", "time (s)", *differ]
    rows = []
    for r in records:
        last = r.history[-1] if r.history else {}
        best = f"{r.best_val_acc:.2%}" if _number(r.best_val_acc) else "?"
        rows.append([r.name, best, last.get("epoch", 0), last.get("wall_time_s", 0), *(
            _cell(r.config, k) for k in differ)])
    return headers, rows


def _cell(config: dict, name: str) -> str:
    """A setting as the table shows it: "—" where the run did not record it (older runs), "default" for None
    (the variant's own, no limit: what None means for that setting)."""
    if name not in config:
        return "—"
    text = "default" if config[name] is None else str(config[name])
    return text if len(text) <= 40 else "…" + text[-39:]


def comparison_plot(records: list[RunRecord], x: str = "epoch") -> Figure:
    """Validation accuracy (left) and loss (right) of every run on one pair of axes each, against ``x`` (epoch or
    time), with a legend naming each run."""
    if x not in X_AXES:
        raise ValueError(f"The x axis must be one of {', '.join(X_AXES)}, not {x!r}.")
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    accuracy, loss = figure.subplots(1, 2)
    key = "epoch" if x == "epoch" else "wall_time_s"
    for record in records:
        xs = [h.get(key, 0) / (60 if x == "time" else 1) for h in record.history]
        accuracy.plot(xs, [h["val_acc"] * 100 for h in record.history], marker="o", markersize=3, label=record.name)
        loss.plot(xs, [h.get("val_loss", math.nan) for h in record.history], marker="o", markersize=3,
                  label=record.name)
    for axes, title in ((accuracy, "Validation accuracy (%)"), (loss, "Validation loss")):
        axes.set_title(title)
        axes.set_xlabel("epoch" if x == "epoch" else "training time (minutes)")
        axes.grid(alpha=0.3)
        if x == "epoch":
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if records:
        accuracy.legend(fontsize=8, loc="lower right")
    return figure
