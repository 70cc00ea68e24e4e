"""The one training loop, used by the command line and by the app's Train tab.

Read it top to bottom: a config, the learning-rate schedule, then ``train()``, which
0. checks the settings, and the memory they need (``check_memory``, memory.py), before any work,
1. loads the data once as uint8 tensors on the training device (decoded and cached by data.py),
2. builds the model, the optimizer and the schedule (or restores them with ``--resume``),
3. loops over epochs: shuffle, augment a batch at a time on the device, step,
4. validates after each epoch, keeps ``best.safetensors`` and a resumable ``last.safetensors``.

It never prints: progress goes to ``on_event`` as ``StepEvent``, ``EpochEvent`` and a final ``EndEvent``.
A ``threading.Event`` passed as ``stop`` ends the run cleanly at the next step.
Under ``torchrun`` it trains with DistributedDataParallel; rank 0 validates, saves and reports.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from . import checkpoints, data, memory
from .devices import describe_device, resolve_device, supports_amp
from .evaluate import evaluate
from .models import MODELS, first_conv, get_spec, whiten_conv_

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "cosine", "plateau", "constant")
AMP_CHOICES = ("auto", "on", "off")
FLIPS = ("random", "alternating")


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
    ema: float = 0.0                 # decay of an exponential moving average of the weights, validated and
                                     # saved instead of the raw weights (0: off; 0.998 ≈ the last 500 steps)
    batch_norm: bool | None = None   # None: the variant's own default
    input_size: int | None = None    # None: the variant's own
    pca_lighting: float = 0.0        # the paper's colour augmentation: alpha ~ N(0, this); 0.1 in the paper
    cutout: int = 0                  # side of the square blanked out of each training image; 0 is off
    flip: str = "random"             # random: each image mirrored with probability 1/2 per epoch; alternating:
                                     # a seeded half mirrored once, then every image every other epoch
    whiten: bool = False             # conv1 starts as a whitening of the training patches and stays frozen
                                     # (airbench's first layer)
    tta: str = "none"                # test-time augmentation when validating: none | flip
    val_fraction: float = 0.1        # carved from train when the data has no val/ split
    test_fraction: float = 0.0       # held out of train as the test split when the data has no test/ split
    limit: int | None = None         # at most this many images per split (quick runs, capped Spaces)
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True
    amp: str = "auto"                # mixed precision: auto = where the device gains from it
    max_steps: int | None = None     # end early (still validates and saves)
    time_limit: float | None = None  # seconds: end after this much training time (still validates and saves)
    out: str | None = None           # run directory; default runs/<model>-<data>-<time>
    resume: str | None = None        # a run directory (or its last.safetensors) to continue
    half: bool = True                # store best.safetensors in fp16 (loading gives fp32)
    workers: int = 2                 # DataLoader workers, only for data too large for memory

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
    "studio": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                   schedule="onecycle", batch_size=256, label_smoothing=0.1, batch_norm=True, tta="flip"),
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
    for name in ("cutout", "plateau_patience", "seed", "workers", "limit", "max_steps", "input_size"):
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
    need(cfg.warmup_epochs is None or 0 <= cfg.warmup_epochs <= cfg.epochs,
         "Warm-up must be between 0 and the number of epochs.")
    need(cfg.tta in ("none", "flip"), "Validation test-time augmentation must be 'none' or 'flip'.")
    need(0 < cfg.val_fraction <= 0.5, "The validation fraction must be above 0 and at most 0.5.")
    need(0 <= cfg.test_fraction <= 0.5, "The test fraction must be at least 0 and at most 0.5.")
    need(cfg.limit is None or cfg.limit >= 2, "The image limit must be at least 2.")
    need(cfg.max_steps is None or cfg.max_steps >= 1, "Max steps must be at least 1.")
    need(cfg.time_limit is None or cfg.time_limit > 0, "The time limit must be above 0.")
    need(cfg.amp in AMP_CHOICES, f"Mixed precision must be one of: {', '.join(AMP_CHOICES)}.")
    need(cfg.input_size is None or 8 <= cfg.input_size <= 1024, "Input size must be from 8 to 1024.")
    resolve_device(cfg.device)  # raises a ValueError sentence when the device is not there
    if cfg.input_size is not None:
        from .summary import summarize  # raises SizeError (a ValueError) with the layer and a hint
        summarize(cfg.model, cfg.input_size, batch_norm=cfg.batch_norm)


def check_memory(cfg: TrainConfig, device: torch.device | None = None, world: int = 1) -> memory.Estimate:
    """Raises ConfigError with one sentence, naming the largest batch that fits, when the run would need more
    memory than this process may use (memory.py); before any image is decoded. Returns the estimate."""
    device = device if device is not None else resolve_device(cfg.device)
    spec = get_spec(cfg.model)
    batch_norm = spec.batch_norm if cfg.batch_norm is None else cfg.batch_norm
    pre = data.preprocess_for(spec, input_size=cfg.input_size, source=cfg.data)
    n_train, n_val = data.split_sizes(cfg.data, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                      seed=cfg.seed, limit=cfg.limit)
    on_host = device.type not in ("cuda", "npu")
    est = memory.estimate(dataclasses.replace(cfg, batch_norm=batch_norm), input_size=pre.input_size,
                          store_size=pre.store_size, num_classes=len(data.class_names(cfg.data)),
                          in_channels=pre.in_channels, bf16=amp_on(device, cfg.amp), host=on_host,
                          # the alternating flip keeps a second, half-mirrored copy of the training images
                          images=n_train * (2 if cfg.flip == "alternating" else 1) + n_val)
    budget, source = memory.available_bytes(device)
    if budget is not None and on_host and world > 1:
        budget //= world          # processes on one host share its memory
    batch = min(cfg.batch_size, max(2, n_train // world))   # as train() shrinks a batch larger than the data
    sentence = memory.refusal(est, batch, budget, source, cfg.model, asked=cfg.batch_size)
    if sentence:
        raise ConfigError(sentence)
    return est


# The names a form shows for the settings it takes (the Train tab's fields).
FORM_LABELS = {"epochs": "Epochs", "batch_size": "Batch size", "lr": "Learning rate", "momentum": "Momentum",
               "weight_decay": "Weight decay", "label_smoothing": "Label smoothing", "limit": "The image limit",
               "input_size": "Input size", "seed": "The seed", "cutout": "Cutout", "ema": "The weight average"}


def config_from_form(**fields) -> TrainConfig:
    """A TrainConfig from a form's raw values: numbers may come as floats (2.0), strings ("0.01") or None (an
    emptied field). A value of the wrong type or an empty required field raises ConfigError with one sentence
    that names the setting; ranges are then checked by check_config, before any work."""
    types = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
             for f in dataclasses.fields(TrainConfig)}
    values = {}
    for name, value in fields.items():
        kind = types.get(name, "")
        label = FORM_LABELS.get(name, f"The setting {name}")
        if not kind.startswith(("int", "float")):
            values[name] = value
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            if kind.endswith("None"):
                values[name] = None
                continue
            raise ConfigError(f"{label} is empty: enter a {'whole ' if kind.startswith('int') else ''}number.")
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if kind.startswith("int"):
            if not (math.isfinite(number) and number.is_integer()):
                raise ConfigError(f"{label} must be a whole number, not {value!r}.")
            values[name] = int(number)
        else:
            if math.isnan(number):
                raise ConfigError(f"{label} must be a number, not {value!r}.")
            values[name] = number
    return TrainConfig(**values)


# ---- events ------------------------------------------------------------------------------------------------

@dataclass
class StepEvent:
    epoch: int          # 1-based
    epochs: int
    step: int           # global optimizer step, 1-based
    total_steps: int
    loss: float
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


# ---- the learning-rate schedule ------------------------------------------------------------------------------

def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """The multiplier on the base learning rate at optimizer step ``step`` (0-based), as nanoGPT's get_lr.

    onecycle: torch's OneCycleLR shape: linear from lr/25 up to lr over the warm-up, cosine down to lr/25e4.
    cosine: linear warm-up from 0, then cosine to 0. plateau and constant: warm-up, then 1 (plateau's
    divide-by-10 is applied on top by the loop, from the validation accuracy).
    """
    if schedule == "onecycle":
        start, end = 1 / 25, 1 / 25e4
        if step < warmup_steps:
            return start + (1 - start) * step / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return 1.0


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or Adam, with weight decay on weights only: biases and BatchNorm get none."""
    trained = [p for p in model.parameters() if p.requires_grad]   # a frozen (whitened) conv1 is left out
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def make_weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights (and BatchNorm statistics), or None when decay is 0.

    The decay warms up as (1 + n) / (10 + n) so the first steps are not averaged with the random start.
    """
    if not decay:
        return None

    @torch.no_grad()
    def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():    # tensors come grouped by dtype: BatchNorm's step counters
            torch._foreach_copy_(averaged, current)
            return
        n = int(n)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))

    return AveragedModel(model, multi_avg_fn=ema_update, use_buffers=True)


# ---- helpers for the loop --------------------------------------------------------------------------------------

def _encode_generator(g: torch.Generator) -> str:
    """A generator's state as text, so the resumable state needs no pickle."""
    return base64.b64encode(g.get_state().cpu().numpy().tobytes()).decode()


def _decode_generator(g: torch.Generator, state: str) -> None:
    g.set_state(torch.frombuffer(bytearray(base64.b64decode(state)), dtype=torch.uint8))


def _default_run_dir(cfg: TrainConfig) -> Path:
    data_name = Path(cfg.data).name if os.sep in cfg.data or "/" in cfg.data else cfg.data
    return Path("runs") / f"{cfg.model}-{data_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size) under torchrun, (0, 1) otherwise; joins the process group once.

    The backend follows the device: nccl for CUDA, hccl for Ascend NPUs, gloo for CPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group({"cuda": "nccl", "npu": "hccl"}.get(device.type, "gloo"))
    return dist.get_rank(), dist.get_world_size()


def amp_on(device: torch.device, amp: str) -> bool:
    """Whether --amp (auto, on or off) turns bf16 autocast on for this device."""
    return amp == "on" or (amp == "auto" and supports_amp(device))


def _autocast(device: torch.device, amp: str):
    if not amp_on(device, amp):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# ---- the loop --------------------------------------------------------------------------------------------------

# Settings a resumed run cannot change: they define the model, its saved optimizer and weight-average state,
# and which images it trains and validates on. Every other setting may be overridden when resuming.
RESUME_FIXED = ("model", "data", "batch_norm", "input_size", "optimizer", "ema", "whiten", "val_fraction",
                "test_fraction", "limit", "seed")
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


def train(cfg: TrainConfig, on_event: Callable[[Event], None] | None = None,
          stop: threading.Event | None = None, command: str | None = None,
          given: set[str] | None = None) -> EndEvent:
    """Trains as ``cfg`` says, reporting through ``on_event``; returns the final EndEvent.

    ``command`` (the command line that started the run, where there is one) is kept in the metadata.
    With ``cfg.resume``, the run goes on with the settings it was started with; only the settings named in
    ``given`` (default: those of ``cfg`` that differ from the defaults) override them (``resumed_config``).

    Bad settings raise ConfigError before any work. Once the run has begun, a failure (out of memory,
    data gone, …) ends it with status "failed" and a message; best.safetensors is never left broken.
    """
    emit = on_event or (lambda event: None)
    stop = stop or threading.Event()

    resume_state, overrides = None, None
    if cfg.resume:
        resume_path = Path(cfg.resume)
        if resume_path.is_dir():
            resume_path = resume_path / "last.safetensors"
        if not resume_path.is_file():
            raise ConfigError(f"There is no resumable run at {cfg.resume} (no last.safetensors).")
        saved = checkpoints.read_train_extra(resume_path)
        cfg, overrides = resumed_config(cfg, saved["config"], resume_path, given)
        resume_state = resume_path
    check_config(cfg)

    device = resolve_device(cfg.device)
    rank, world = _distributed(device)
    if world > 1 and device.type in ("cuda", "npu"):
        device = torch.device(device.type, int(os.environ.get("LOCAL_RANK", "0")))
    check_memory(cfg, device, world)   # a batch that cannot fit is refused before any data is decoded
    torch.manual_seed(cfg.seed)

    spec = get_spec(cfg.model)
    if cfg.batch_norm is None:
        cfg.batch_norm = spec.batch_norm
    pre = data.preprocess_for(spec, input_size=cfg.input_size, source=cfg.data)
    run_dir = Path(cfg.out) if cfg.out else _default_run_dir(cfg)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    cfg.out = str(run_dir)
    best_path = run_dir / "best.safetensors"
    last_path = run_dir / "last.safetensors"

    split_args = dict(val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed,
                      limit=cfg.limit)
    train_data = data.load_split(cfg.data, "train", pre, **split_args)
    val_data = data.load_split(cfg.data, "val", pre, **split_args)
    if isinstance(train_data, data.ImageData):
        train_data = train_data.to(device)
    if isinstance(val_data, data.ImageData):
        val_data = val_data.to(device)
    if cfg.flip == "alternating":
        train_data = _half_mirrored(train_data, cfg.seed)
    classes = train_data.classes
    n_train = len(train_data)
    if n_train < cfg.batch_size * world:
        # Small data sets still train: one smaller batch per step instead of none at all.
        cfg.batch_size = max(2, n_train // world)
    steps_per_epoch = n_train // (cfg.batch_size * world)
    schedule_steps = steps_per_epoch * cfg.epochs      # the learning-rate schedule always plans the whole run
    total_steps = min(schedule_steps, cfg.max_steps) if cfg.max_steps else schedule_steps   # --max-steps cuts it short
    warmup_epochs = cfg.warmup_epochs if cfg.warmup_epochs is not None else (
        0.3 * cfg.epochs if cfg.schedule == "onecycle" else 0.0)
    warmup_steps = round(warmup_epochs * steps_per_epoch)

    model = spec.build(num_classes=len(classes), in_channels=pre.in_channels, batch_norm=cfg.batch_norm)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.whiten:
        conv1 = first_conv(model)
        if resume_state is None:   # a resumed run loads the whitened filters it saved
            whiten_conv_(conv1, _whitening_sample(train_data, pre, device, cfg.seed))
        conv1.weight.requires_grad_(False)
    optimizer = make_optimizer(model, cfg)
    averaged = make_weight_average(model, cfg.ema)
    evaluated = averaged.module if averaged is not None else model   # the weights that are validated and saved
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    order_gen = torch.Generator().manual_seed(cfg.seed)                 # shuffling: the same on every rank
    # Augmentation draws its randomness on the device the batch lives on (no host round trip on a GPU).
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + rank)

    state = {"epoch": 0, "step": 0, "step_in_epoch": 0, "history": [], "best_val_acc": None, "best_epoch": None,
             "plateau_scale": 1.0, "epochs_since_best": 0, "wall_time_s": 0.0, "commands": []}
    if resume_state is not None:
        extra = checkpoints.load_train_state(resume_state, model, optimizer, averaged=averaged, device=device)
        state.update({k: extra[k] for k in state if k in extra})
        if "commands" not in extra and best_path.exists():  # a run saved before commands were kept
            state["commands"] = [c for c in [checkpoints.read_metadata(best_path).get("command")] if c]
        _decode_generator(order_gen, extra["order_gen"])
        if extra.get("aug_gen"):
            _decode_generator(aug_gen, extra["aug_gen"])
    if command:
        state["commands"] = [*state["commands"], command]

    ddp_model = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    meta_base = dict(data=cfg.data, data_description=data.describe_source(cfg.data),
                     config=cfg.to_dict(), device=describe_device(device), world_size=world,
                     # The command that started the run, then those that resumed it (training time adds up).
                     command=(state["commands"] or [None])[0], resume_commands=state["commands"][1:],
                     machine=_machine(),
                     mixed_precision="bf16" if amp_on(device, cfg.amp) else "off")

    def save_last(epoch_start_gen: str) -> None:
        if rank != 0:
            return
        extra = {**state, "config": cfg.to_dict(), "order_gen": epoch_start_gen,
                 "aug_gen": _encode_generator(aug_gen)}
        checkpoints.save_train_state(last_path, model, optimizer, averaged=averaged, extra=extra)

    def best_meta() -> dict:
        return checkpoints.model_meta(
            cfg.model, batch_norm=cfg.batch_norm, num_classes=len(classes), in_channels=pre.in_channels,
            classes=classes, preprocess=pre.to_dict(), epochs=state["epoch"], history=state["history"],
            best_val_acc=state["best_val_acc"], best_epoch=state["best_epoch"],
            wall_time_s=round(state["wall_time_s"], 1), **meta_base)

    def save_best() -> None:
        checkpoints.save_checkpoint(best_path, evaluated.state_dict(), best_meta(), half=cfg.half)

    def finish_best() -> None:
        """Gives best.safetensors the whole run's history (its weights stay those of the best epoch)."""
        if rank == 0 and best_path.exists():
            weights, _ = checkpoints.load_checkpoint(best_path)
            checkpoints.save_checkpoint(best_path, weights, best_meta(), half=cfg.half)

    if rank == 0:
        emit(StartEvent(str(run_dir), describe_device(device), n_train, len(val_data), total_steps, classes,
                        describe_overrides(overrides) if overrides is not None else None))

    status, message = "finished", "Training finished."
    run_start = time.perf_counter() - state["wall_time_s"]
    speed_start, speed_images = time.perf_counter(), 0
    try:
        while state["epoch"] < cfg.epochs and state["step"] < total_steps:
            epoch = state["epoch"] + 1
            epoch_start = time.perf_counter()
            epoch_gen_state = _encode_generator(order_gen)   # lets a resume replay this epoch's order
            ddp_model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            batches = _train_batches(train_data, cfg.batch_size * world, order_gen, rank, world)
            for i, (images, labels) in enumerate(batches):
                if i < state["step_in_epoch"]:
                    continue            # resuming mid-epoch: these batches were done before the stop
                if stop.is_set() or state["step"] >= total_steps:
                    break
                if cfg.time_limit and time.perf_counter() - run_start > cfg.time_limit:
                    break
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                x = data.train_transform(images, pre, aug_gen, pca_lighting=cfg.pca_lighting, cutout=cfg.cutout,
                                         flip=_epoch_flip(cfg.flip, epoch))
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                lr = cfg.lr * lr_factor(cfg.schedule, state["step"], schedule_steps, warmup_steps) * state["plateau_scale"]
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with _autocast(device, cfg.amp):
                    logits = ddp_model(x)
                    loss = criterion(logits.float(), labels)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"The loss became {loss.item()} at step {state['step'] + 1}: the learning rate "
                        f"({lr:.3g}) is probably too high for this model; try a smaller one.")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if averaged is not None:
                    averaged.update_parameters(model)

                state["step"] += 1
                state["step_in_epoch"] = i + 1
                loss_sum += loss.detach() * len(labels)
                correct += (logits.argmax(1) == labels).sum()
                seen += len(labels)
                speed_images += len(labels) * world
                if rank == 0:
                    elapsed = time.perf_counter() - speed_start
                    speed = speed_images / max(elapsed, 1e-9)
                    steps_left = total_steps - state["step"]
                    emit(StepEvent(epoch, cfg.epochs, state["step"], total_steps, loss.item(), lr, speed,
                                   steps_left * cfg.batch_size * world / max(speed, 1e-9)))

            ended_early = stop.is_set() or (cfg.time_limit and time.perf_counter() - run_start > cfg.time_limit)
            finished_epoch = state["step_in_epoch"] >= steps_per_epoch
            state["wall_time_s"] = time.perf_counter() - run_start
            if finished_epoch or state["step"] >= total_steps or (ended_early and seen > 0):
                # A finished epoch, --max-steps, a time limit or Stop: validate and save what there is.
                if finished_epoch:
                    state["epoch"] = epoch
                    state["step_in_epoch"] = 0
                    epoch_gen_state = _encode_generator(order_gen)
                record = _validate_and_record(evaluated, val_data, pre, cfg, device, state, epoch,
                                              loss_sum, correct, seen, lr, epoch_start, run_start, rank)
                if rank == 0 and record["best"]:
                    save_best()
                save_last(epoch_gen_state)
                if rank == 0:
                    emit(EpochEvent(**{k: record[k] for k in (
                        "epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                        "wall_time_s", "best")}, epochs=cfg.epochs))
            if ended_early:
                status = "stopped"
                message = "Stopped by the time limit." if not stop.is_set() else "Stopped."
                message += (" The best checkpoint is kept; --resume continues the run." if best_path.exists()
                            else " Nothing was trained yet, so nothing was saved.")
                break
        if status == "finished" and cfg.max_steps and state["step"] >= cfg.max_steps:
            message = f"Reached --max-steps {cfg.max_steps}."
        finish_best()
    except Exception as exc:  # the run ends with a message; whatever was saved stays intact
        status, message = "failed", _failure_sentence(exc, saved=best_path.exists())
        _release_device_memory(device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.barrier()

    end = EndEvent(status, message, str(run_dir), str(best_path) if best_path.exists() else None,
                   state["best_val_acc"], round(time.perf_counter() - run_start, 1))
    if rank == 0:
        emit(end)
    return end


def _epoch_flip(flip: str, epoch: int) -> str:
    """train_transform's flip for a 1-based epoch. Alternating: the half mirrored at the start is seen as it
    is stored in odd epochs and mirrored back in even ones, so every image is seen both ways equally often
    (random flips repeat a view about half the time)."""
    return "random" if flip == "random" else ("none" if epoch % 2 == 1 else "all")


def _half_mirrored(train_data, seed: int):
    """The training images with a seeded random half of them mirrored, for the alternating flip (Jordan 2024,
    airbench). The same seed mirrors the same half, so a resumed run goes on with the same images."""
    if not isinstance(train_data, data.ImageData):
        raise ConfigError("The alternating flip needs data that fits in memory; use --flip random.")
    mask = torch.rand(len(train_data), generator=torch.Generator().manual_seed(seed)) < 0.5
    mask = mask.to(train_data.images.device)[:, None, None, None]
    images = torch.where(mask, train_data.images.flip(-1), train_data.images)
    return data.ImageData(images, train_data.labels, train_data.classes, train_data.paths)


def _whitening_sample(train_data, pre, device, seed: int = 0) -> torch.Tensor:
    """A seeded random sample of the training images (stored in class order, so not simply the first), as the
    network sees them before augmentation: 5,000 at 32x32, as many pixels in all at larger sizes."""
    n = max(64, 5000 * 32 * 32 // pre.input_size ** 2)
    images = []
    for batch, _ in train_data.batches(512, shuffle=True, generator=torch.Generator().manual_seed(seed)):
        images.append(batch)
        if sum(len(b) for b in images) >= n:
            break
    return data.eval_transform(torch.cat(images)[:n].to(device), pre)


def _train_batches(train_data, global_batch: int, order_gen: torch.Generator, rank: int, world: int):
    """Yields this rank's (uint8 images, labels) batches of one epoch, dropping the last partial batch."""
    for images, labels in train_data.batches(global_batch, shuffle=True, generator=order_gen, drop_last=True):
        yield images[rank::world], labels[rank::world]


def _validate_and_record(model, val_data, pre, cfg, device, state, epoch, loss_sum, correct, seen,
                         lr, epoch_start, run_start, rank) -> dict:
    """Validates (rank 0), appends the epoch to the history and updates best/plateau bookkeeping."""
    if world_size() > 1:
        for t in (loss_sum, correct):
            dist.all_reduce(t)
        seen *= world_size()
    result = evaluate(model, val_data, pre, device=device, tta=cfg.tta, channels_last=cfg.channels_last) \
        if rank == 0 else None
    val_acc = result.accuracy if result else 0.0
    val_loss = result.loss if result else 0.0
    best_before = state["best_val_acc"]
    is_best = rank == 0 and (best_before is None or val_acc > best_before)
    if is_best:
        state["best_val_acc"] = val_acc
        state["best_epoch"] = epoch
        state["epochs_since_best"] = 0
    else:
        state["epochs_since_best"] += 1
        if cfg.schedule == "plateau" and state["epochs_since_best"] >= cfg.plateau_patience:
            state["plateau_scale"] /= 10     # the paper: divide by 10 when validation stops improving
            state["epochs_since_best"] = 0
    state["wall_time_s"] = time.perf_counter() - run_start
    record = dict(epoch=epoch, step=state["step"], train_loss=(loss_sum / max(seen, 1)).item(),
                  train_acc=(correct.float() / max(seen, 1)).item(), val_loss=val_loss, val_acc=val_acc,
                  lr=lr, seconds=round(time.perf_counter() - epoch_start, 2),
                  wall_time_s=round(state["wall_time_s"], 1), best=is_best)
    state["history"].append({k: (round(v, 5) if isinstance(v, float) else v) for k, v in record.items()})
    return record


def _machine() -> str:
    """The machine in a few words, for model cards: processor and core count."""
    import platform
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# What PyTorch's errors say when memory runs out: CUDA/NPU/MPS ("out of memory") and the CPU allocator.
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate")
# ... and when the device itself fails or goes away (a lost GPU, a reset, a driver error).
DEVICE_FAILURE = ("cuda error", "cuda driver", "cudnn_status", "cublas_status", "device-side", "npu error",
                  "acl error", "mps backend", "no cuda-capable device", "device not ready", "device is unavailable")


def _release_device_memory(device: torch.device) -> None:
    """After a failed run, hand the device's cached memory back, so that prediction on it keeps working."""
    try:
        if device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
        elif device.type == "mps":
            torch.mps.empty_cache()
    except Exception:  # a device that has gone away cannot be cleaned up; nothing more to do
        pass


def _failure_sentence(exc: Exception, saved: bool = True) -> str:
    """One sentence for a run that broke, with the likely cause where we know it; ``saved``: whether there is a
    best checkpoint to keep."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.rstrip(".")
    kept = "The best checkpoint so far is kept." if saved else "Nothing had been saved yet."
    lowered = text.lower()
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or any(s in lowered for s in OUT_OF_MEMORY):
        return f"Training ran out of memory at this batch size: try a smaller batch size. {kept}"
    if isinstance(exc, getattr(torch, "AcceleratorError", ())) or any(s in lowered for s in DEVICE_FAILURE):
        return f"Training stopped because the device failed or disappeared ({text}). {kept}"
    if isinstance(exc, data.DataError):
        return f"Training stopped because the data could not be read: {text}. {kept}"
    if isinstance(exc, (FileNotFoundError, OSError)):
        return f"Training stopped because a file could not be read or written ({text}). {kept}"
    if isinstance(exc, (ValueError, FloatingPointError)):
        return f"{text}."
    return f"Training failed: {type(exc).__name__}: {text}. {kept}"
