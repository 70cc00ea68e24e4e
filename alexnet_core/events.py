"""What a training run reports, in order: one ``StartEvent``, a ``StepEvent`` per status (every step on a CPU,
about twice a second on an accelerator, where reading the loss makes the host wait), an ``EpochEvent`` per
validation and one ``EndEvent``. The loop never prints; the CLI and the app render these."""

from __future__ import annotations

from dataclasses import dataclass, field


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


Event = StartEvent | StepEvent | EpochEvent | EndEvent
