"""What a training run is asked to do: ``TrainConfig``, the recipes, the checks made before any work and the
rules for resuming a run (how a form, the API or the flags become a TrainConfig: train_settings.py).

``check_config`` refuses a setting that cannot work and ``check_memory`` a run that cannot fit, each with one
sentence (``ConfigError``), before any image is decoded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data, memory
from .devices import amp_on, resolve_device
from .geometry import MAX_INPUT_SIZE, check_fit
from .models import MODELS, get_spec
from .transforms import VALIDATION_TTA

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "cosine", "plateau", "constant")
AMP_CHOICES = ("auto", "on", "off")
FLIPS = ("random", "alternating")
RETRAIN = ("all", "classifier")   # with a start (transfer.py): every layer, or the classifier on frozen features


@dataclass
class TrainConfig:
    """Everything that defines a run. Saved whole in every checkpoint's metadata."""

    model: str = "alexnet_cifar"
    data: str = "cifar10"
    epochs: int = 10
    batch_size: int = 128            # per process: under torchrun the global batch is this times the processes
    lr: float = 0.01                 # the paper's starting rate
    optimizer: str = "sgd"
    momentum: float = 0.9            # the paper's
    nesterov: bool = True
    weight_decay: float = 5e-4       # the paper's; never applied to biases and BatchNorm
    schedule: str = "onecycle"
    warmup_epochs: float | None = None   # None: 30% of the run for onecycle (as torch's OneCycleLR), else 0
    plateau_patience: int = 2        # plateau: epochs without a better validation accuracy before lr /= 10
    label_smoothing: float = 0.0
    ema: float = 0.0                 # the weight average: decay of a moving average of the weights, validated and
                                     # saved instead of the raw weights (0: off; 0.998 ≈ the last 500 steps)
    batch_norm: bool | None = None   # None: the variant's own default
    input_size: int | None = None    # None: the variant's own
    pca_lighting: float = 0.0        # the paper's colour augmentation: alpha ~ N(0, this); 0.1 in the paper
    cutout: int = 0                  # side of the square blanked out of each training image; 0 is off
    crop_pad: int | None = None      # small inputs: pixels of reflection around each image before its random crop
                                     # (None: an eighth of the input, 4 at 32x32; 0: no shift)
    flip: str = "random"             # random: each image mirrored with probability 1/2 per epoch; alternating:
                                     # a seeded half mirrored once, then every image every other epoch
    whiten: bool = False             # conv1 starts as a whitening of the training patches and stays frozen
                                     # (airbench's first layer)
    tta: str = "none"                # test-time augmentation when validating: none | flip
    val_fraction: float = 0.1        # carved from train when the data has no val/ split
    test_fraction: float = 0.0       # held out of train as the test split when the data has no test/ split
    limit: int | None = None         # images per split: at most this many (quick runs, capped Spaces)
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True
    amp: str = "auto"                # mixed precision: auto = where the device gains from it
    max_steps: int | None = None     # end early (still validates and saves)
    time_limit: float | None = None  # seconds: end after this much training time (still validates and saves); the
                                     # schedule then ends there where the epochs would take longer (budgeted)
    out: str | None = None           # run directory; default runs/<model>-<data>-<time>
    resume: str | None = None        # a run directory (or its last.safetensors) to continue
    half: bool = True                # store best.safetensors in fp16 (loading gives fp32)
    workers: int = 2                 # DataLoader workers, only for data too large for memory
    start_from: str | None = None    # None: random weights; "imagenet" or a checkpoint: start from its layers
                                     # (all but the last), and the start decides the model (transfer.py)
    retrain: str = "all"             # with a start: "all" layers, or the "classifier" on frozen conv features

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# Recipes: the paper's and the tutorials' settings, and the Studio's own. The CLI's --recipe and the Train
# tab's presets both read this table; explicit settings override a recipe.
RECIPES: dict[str, dict] = {
    "paper": dict(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=5e-4,
                  schedule="plateau", batch_size=128, pca_lighting=0.1),
    "ascend-tutorial": dict(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=5e-4,
                            schedule="onecycle", batch_size=128),
    "flowers-tutorial": dict(optimizer="adam", lr=2e-4, weight_decay=0.0, schedule="constant",
                             batch_size=32),
    # airbench's recipe (Jordan 2024) as this loop runs it, picked on 10-epoch validation runs of
    # alexnet_cifar_air (checkpoints/README.md): a large batch at a high rate, a whitened conv1, flips that
    # alternate by epoch and 2-pixel crops. The Studio's earlier recipe (lr 0.1, batch 256, label smoothing 0.1)
    # trained alexnet_cifar_fast to 90.15%; its figures stay in checkpoints/README.md's history.
    "studio": dict(optimizer="sgd", lr=1.17, momentum=0.85, nesterov=True, weight_decay=0.00134,
                   schedule="onecycle", batch_size=1024, label_smoothing=0.2, batch_norm=True, whiten=True,
                   flip="alternating", crop_pad=2, tta="flip"),
}


class ConfigError(ValueError):
    """A setting that cannot work, reported before any work starts."""


def check_config(cfg: TrainConfig) -> None:
    """Raises ConfigError with one sentence for the first setting that cannot work."""

    def need(ok: bool, sentence: str) -> None:
        if not ok:
            raise ConfigError(sentence)

    def whole(value) -> bool:  # an int, not a bool (True is an int to Python) and not 2.5 or "3"
        return isinstance(value, int) and not isinstance(value, bool)

    def number(*names: str) -> None:  # a real number, not "0.1", True or NaN, so comparisons below are safe
        for name in names:
            value = getattr(cfg, name)
            need(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                   and not math.isnan(value)),
                 f"The setting {name} must be a number, not {value!r}.")

    need(isinstance(cfg.model, str) and cfg.model in MODELS,
         f"Unknown model '{cfg.model}'. Choose one of: {', '.join(MODELS)}.")
    need(isinstance(cfg.data, str) and bool(cfg.data.strip()), "Pick the data to train on.")
    need(whole(cfg.epochs) and 1 <= cfg.epochs <= 1000, "Epochs must be a whole number from 1 to 1000.")
    need(whole(cfg.batch_size) and 2 <= cfg.batch_size <= 8192,
         "Batch size must be a whole number from 2 to 8192.")
    need(isinstance(cfg.lr, (int, float)) and not isinstance(cfg.lr, bool) and math.isfinite(cfg.lr)
         and 0 < cfg.lr <= 10, "Learning rate must be a number above 0 and at most 10.")
    number("momentum", "weight_decay", "label_smoothing", "ema", "pca_lighting", "warmup_epochs", "val_fraction",
           "test_fraction", "time_limit")
    for name in ("cutout", "crop_pad", "plateau_patience", "seed", "workers", "limit", "max_steps", "input_size"):
        value = getattr(cfg, name)
        need(value is None or whole(value), f"The setting {name} must be a whole number, not {value!r}.")
    need(cfg.flip in FLIPS, f"Flip must be one of: {', '.join(FLIPS)}.")
    need(isinstance(cfg.whiten, bool), f"The setting whiten must be true or false, not {cfg.whiten!r}.")
    need(cfg.optimizer in OPTIMIZERS, f"Optimizer must be one of: {', '.join(OPTIMIZERS)}.")
    need(cfg.schedule in SCHEDULES, f"Schedule must be one of: {', '.join(SCHEDULES)}.")
    need(0 <= cfg.seed < 2**63, "The seed must be a whole number from 0 to 2^63 - 1.")
    need(0 <= cfg.workers <= 64, "Workers must be from 0 to 64.")
    need(cfg.plateau_patience >= 1, "Plateau patience must be at least 1 epoch.")
    need(0 <= cfg.momentum < 1, "Momentum must be at least 0 and below 1.")
    need(0 <= cfg.weight_decay <= 0.1, "Weight decay must be between 0 and 0.1.")
    need(0 <= cfg.label_smoothing < 1, "Label smoothing must be at least 0 and below 1.")
    need(0 <= cfg.ema < 1, "The weight-average decay (ema) must be at least 0 and below 1 (0 turns it off).")
    need(0 <= cfg.pca_lighting <= 1, "PCA lighting strength must be between 0 and 1 (the paper uses 0.1).")
    need(0 <= cfg.cutout <= 512, "Cutout must be between 0 (off) and 512 pixels.")
    need(cfg.crop_pad is None or 0 <= cfg.crop_pad <= 16, "Crop padding must be between 0 (no shift) and 16 pixels.")
    need(cfg.warmup_epochs is None or 0 <= cfg.warmup_epochs <= cfg.epochs,
         "Warm-up must be between 0 and the number of epochs.")
    need(cfg.tta in VALIDATION_TTA, "Validation test-time augmentation must be 'none' or 'flip'.")
    need(0 < cfg.val_fraction <= 0.5, "The validation fraction must be above 0 and at most 0.5.")
    need(0 <= cfg.test_fraction <= 0.5, "The test fraction must be at least 0 and at most 0.5.")
    need(cfg.limit is None or cfg.limit >= 2, "Images per split must be at least 2.")
    need(cfg.max_steps is None or cfg.max_steps >= 1, "Max steps must be at least 1.")
    need(cfg.time_limit is None or cfg.time_limit > 0, "The time limit must be above 0.")
    need(cfg.retrain in RETRAIN, f"Retrain must be one of: {', '.join(RETRAIN)}.")
    need(cfg.retrain == "all" or bool(cfg.start_from),
         "Retraining the classifier only needs a trained start: set Start from (imagenet or a checkpoint).")
    need(cfg.start_from is None or isinstance(cfg.start_from, str),
         f"Start from must be imagenet or a checkpoint, not {cfg.start_from!r}.")
    need(not (cfg.start_from and cfg.whiten),
         "A run with a start keeps its conv1: whitening would replace it; leave out --whiten.")
    need(cfg.amp in AMP_CHOICES, f"Mixed precision must be one of: {', '.join(AMP_CHOICES)}.")
    need(cfg.input_size is None or 8 <= cfg.input_size <= MAX_INPUT_SIZE,
         f"Input size must be from 8 to {MAX_INPUT_SIZE}.")
    resolve_device(cfg.device)  # raises a ValueError sentence when the device is not there
    if cfg.input_size is not None:
        check_fit(cfg.model, cfg.input_size)  # raises SizeError (a ValueError) with the layer and a hint


def check_memory(cfg: TrainConfig, device: torch.device | None = None, world: int = 1) -> memory.Estimate:
    """Raises ConfigError with one sentence, naming the largest batch that fits, when the run would need more
    memory than this process may use (memory.py); before any image is decoded. Returns the estimate."""
    device = device if device is not None else resolve_device(cfg.device)
    spec = get_spec(cfg.model)
    batch_norm = spec.batch_norm if cfg.batch_norm is None else cfg.batch_norm
    pre = data.preprocess_for(spec, input_size=cfg.input_size, data=cfg.data)
    n_train, n_val = data.split_sizes(cfg.data, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                      seed=cfg.seed, limit=cfg.limit)
    on_host = device.type not in ("cuda", "npu")
    est = memory.estimate(dataclasses.replace(cfg, batch_norm=batch_norm), input_size=pre.input_size,
                          store_size=pre.store_size, num_classes=len(data.class_names(cfg.data)),
                          in_channels=pre.in_channels, bf16=amp_on(device, cfg.amp), host=on_host,
                          # the alternating flip keeps a second, half-mirrored copy of the training images
                          images=n_train * (2 if cfg.flip == "alternating" else 1) + n_val,
                          # the classifier only: each training image's features and its mirror's, kept
                          cached_features=2 * n_train if cfg.retrain == "classifier" else 0)
    budget, source = memory.available_bytes(device)
    if budget is not None and on_host and world > 1:
        budget //= world          # processes on one host share its memory
    batch = min(cfg.batch_size, max(2, n_train // world))   # as train() shrinks a batch larger than the data
    sentence = memory.refusal(est, batch, budget, source, cfg.model, asked=cfg.batch_size)
    if sentence:
        raise ConfigError(sentence)
    return est


# ---- resuming a run ---------------------------------------------------------------------------------------

# Settings a resumed run cannot change: they define the model, its saved optimizer and weight-average state,
# and which images it trains and validates on. Every other setting may be overridden when resuming.
RESUME_FIXED = ("model", "data", "batch_norm", "input_size", "optimizer", "ema", "whiten", "val_fraction",
                "test_fraction", "limit", "seed", "start_from", "retrain")
# How long this command goes on: limits of the command that ended the last session, not of the run (they
# count the whole run's steps and time, so keeping them would end a resumed run at once).
COMMAND_LIMITS = ("max_steps", "time_limit")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resumed_config(cfg: TrainConfig, saved: dict, resume_path: Path,
                   given: set[str] | None = None) -> tuple[TrainConfig, dict[str, tuple]]:
    """The config of a resumed run: every setting the run was started with, except those in ``given`` (the
    settings the user actually gave, e.g. the flags typed on the command line), which override it.

    ``given`` None means: the settings of ``cfg`` that differ from TrainConfig's defaults. Returns the config
    and the overridden settings as {name: (the run's value, the new value)}. A fixed setting (RESUME_FIXED)
    given with another value raises ConfigError.
    """
    defaults = TrainConfig()
    if given is None:
        given = {f.name for f in dataclasses.fields(TrainConfig) if getattr(cfg, f.name) != getattr(defaults, f.name)}
    run = TrainConfig.from_dict(saved)
    resume_dir = resume_path.parent
    settings = {**run.to_dict(), "resume": str(resume_path), "out": str(resume_dir)}
    overrides = {}
    for name in sorted(set(given) - {"resume"}):
        if name not in settings:
            continue
        new, old = getattr(cfg, name), settings[name]
        if name == "out":
            if new is not None and Path(new).resolve() != resume_dir.resolve():
                raise ConfigError(f"A resumed run goes on in its own folder ({resume_dir}); leave out --out.")
            continue
        if name in COMMAND_LIMITS or new == old:
            settings[name] = new
            continue
        if name in RESUME_FIXED:
            raise ConfigError(f"A resumed run keeps its model, data and how they were split: {_flag(name)} cannot "
                              f"change (the run has {old!r}); start a new run for that.")
        settings[name] = new
        overrides[name] = (old, new)
    for name in COMMAND_LIMITS:   # never carried over from the last session
        if name not in given:
            settings[name] = None
    return TrainConfig.from_dict(settings), overrides


def describe_overrides(overrides: dict[str, tuple]) -> str:
    """One line for a resumed run: which settings the command changed, or that it changed none."""
    if not overrides:
        return "Resumed with the run's own settings."
    changes = ", ".join(f"{name} {old!r} → {new!r}" for name, (old, new) in overrides.items())
    return f"Resumed with the run's own settings except {changes} (overridden)."
