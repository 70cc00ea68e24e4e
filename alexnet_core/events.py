"""What a training run reports, in order: one ``StartEvent``, a ``StepEvent`` per status (every step on a CPU,
about twice a second on an accelerator, where reading the loss makes the host wait), an ``EpochEvent`` per
validation, ``SnapshotEvent``s (the network's filters, feature maps and guesses) and one ``EndEvent``. The loop
never prints; the CLI and the app render these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepEvent:
    epoch: int          # 1-based
    epochs: int
    step: int           # global optimizer step, 1-based
    total_steps: int
    loss: float         # the mean training loss of the steps since the previous StepEvent
    lr: float
    images_per_s: float
    eta_s: float        # time left for the whole run, from the speed so far


@dataclass
class EpochEvent:
    epoch: int
    epochs: int
    step: int           # the global step at which it was validated
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float      # this epoch's training + validation time
    wall_time_s: float  # training time since the run began (resumed runs included)
    best: bool          # this epoch gave a new best.safetensors


@dataclass
class EndEvent:
    status: str         # finished | stopped | failed
    message: str
    run_dir: str
    best_path: str | None
    best_val_acc: float | None
    wall_time_s: float


@dataclass
class StartEvent:
    run_dir: str
    device: str
    train_images: int
    val_images: int
    total_steps: int
    classes: list[str] = field(default_factory=list)
    resumed: str | None = None   # for a resumed run: which settings the command overrode (describe_overrides)


@dataclass
class SnapshotEvent:
    """The network at one moment (snapshots.py): at a run's start, at each validation, and in a long epoch at
    least every snapshots.SNAPSHOT_SECONDS; written to ``path`` in the run directory before it is reported."""

    snapshot: Any       # snapshots.Snapshot
    images: Any         # snapshots.SnapshotImages: the fixed images and the photo it looked at
    path: str


Event = StartEvent | StepEvent | EpochEvent | SnapshotEvent | EndEvent
