"""What the Train tab shows of a run: its state in words, its loss and accuracy curves, and the download of its
best checkpoint, named after the run (``training_view``, one answer from one state of the run)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from alexnet_core import data as datasets
from alexnet_core.runner import RunSnapshot

from . import room
from .visitors import checkpoint_name, for_the_page


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60:02d} s"


LOSS_CURVES = ("train (per step)", "validation")
ACCURACY_CURVES = ("train", "validation")


def _curves_frame(rows: list[dict] | None, x: str, y: str, curves: tuple[str, ...]) -> pd.DataFrame:
    """A chart's rows with typed columns, and one empty (NaN) row for each curve that has no value yet.

    Typed, empty or not: an untyped empty frame makes the plot's axes categorical for good (every loss value its
    own label and no line). The NaN rows, which Vega leaves out, name every curve from the first frame on:
    Gradio's LinePlot fixes its colours to the curves in the first data it draws and never adds one, so a curve
    missing then would never be drawn."""
    rows = list(rows or [])
    present = {row["curve"] for row in rows}
    rows += [{x: 0, y: float("nan"), "curve": curve} for curve in curves if curve not in present]
    return pd.DataFrame(rows, columns=[x, y, "curve"]).astype({x: "int64", y: "float64", "curve": "object"})


def loss_frame(rows: list[dict] | None = None) -> pd.DataFrame:
    return _curves_frame(rows, "step", "loss", LOSS_CURVES)


def accuracy_frame(rows: list[dict] | None = None) -> pd.DataFrame:
    return _curves_frame(rows, "epoch", "accuracy", ACCURACY_CURVES)


def training_view(s: RunSnapshot) -> tuple[str, pd.DataFrame, pd.DataFrame, str | None]:
    """A run's state in words, its loss and accuracy curves, and the download of its best checkpoint once it has
    ended (named after the run; the button is disabled while there is none)."""
    if s.status == "idle":
        text = "No run yet. Pick a model and data, then Start."
    else:
        lines = [f"**{s.status.capitalize()}** · {for_the_page(s.message)}"]
        if s.total_steps:
            percent = 100 * s.step / s.total_steps
            lines.append(f"Step {s.step:,} / {s.total_steps:,} ({percent:.0f}%) · epoch {s.epoch} / {s.epochs}"
                         f" · {s.images_per_s:,.0f} images/s · {_duration(s.eta_s)} left")
        if s.best_val_acc is not None:
            lines.append(f"Best validation accuracy {s.best_val_acc:.1%}"
                         + (f" · checkpoint of run `{Path(s.best_path).parent.name}`: download it below; Predict, "
                            f"Evaluate and Inside list it for you" if s.best_path else ""))
        text = "\n\n".join(lines)
    train_loss, val_loss = LOSS_CURVES
    loss = loss_frame([{"step": step, "loss": value, "curve": train_loss} for step, value in s.steps]
                       + [{"step": h["step"], "loss": h["val_loss"], "curve": val_loss} for h in s.history])
    accuracy = accuracy_frame([{"epoch": h["epoch"], "accuracy": h[key], "curve": label} for h in s.history
                                for key, label in zip(("train_acc", "val_acc"), ACCURACY_CURVES)])
    best = s.best_path if not s.active and s.best_path and Path(s.best_path).is_file() else None
    # Served from Gradio's own folder as an attachment, under the run's name (ui.room.download_copy).
    return text, loss, accuracy, room.download_copy(best, checkpoint_name(best)) if best else None


def download_button(checkpoint: str | None) -> gr.DownloadButton:
    """The download button as its checkpoint allows: disabled while there is none. (The events that follow a run
    send the checkpoint alone, which API clients receive as a file; the button's state follows its value.)"""
    return gr.DownloadButton(interactive=checkpoint is not None)


def shortened_splits(config, cap: int) -> str:
    """The splits the images cap shortened, as "20 of its 48 training images and …"; empty when it cut none."""
    split = dict(val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed)
    full = datasets.split_sizes(config.data, limit=config.limit, **split)
    used = datasets.split_sizes(config.data, limit=cap, **split)
    return " and ".join(f"{n:,} of its {whole:,} {name} images"
                        for name, n, whole in zip(("training", "validation"), used, full) if n < whole)
