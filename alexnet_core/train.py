"""The one training loop, used by the command line and by the app's Train tab.

Read ``train()`` top to bottom; it
0. settles the settings (``--resume`` takes the run's own, config.py) and checks them, and the memory they need
   (``check_memory``), before any work,
1. loads the data once as uint8 tensors on the training device (decoded and cached by data.py),
2. builds the model, the optimizer and the schedule (optim.py), or restores them with ``--resume``,
3. loops over epochs: shuffle, augment a batch at a time on the device, step,
4. validates after each epoch, keeps ``best.safetensors`` and a resumable ``last.safetensors``.

It never prints: progress goes to ``on_event`` as the events of events.py (``StartEvent``, ``StepEvent``,
``EpochEvent`` and a final ``EndEvent``). A ``threading.Event`` passed as ``stop`` ends the run cleanly at the
next step. Under ``torchrun`` it trains with DistributedDataParallel; rank 0 validates, saves and reports.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from . import checkpoints, data, transfer
from . import snapshots as snaps
from .config import ConfigError, TrainConfig, check_config, check_memory, describe_overrides, resumed_config
from .devices import amp_on, autocast, describe_device, describe_machine, resolve_device
from .evaluate import EvalResult, evaluate
from .events import EndEvent, EpochEvent, Event, SnapshotEvent, StartEvent, StepEvent
from .images import error_reason
from .models import first_conv, get_spec, whiten_conv_
from .optim import lr_factor, make_optimizer, make_weight_average
from .transforms import Preprocess, eval_transform, train_transform


@dataclass
class RunState:
    """How far a run has got. Saved in last.safetensors (as JSON), so that --resume goes on from here."""

    epoch: int = 0                    # epochs finished
    step: int = 0                     # optimizer steps taken
    step_in_epoch: int = 0            # steps taken in the unfinished epoch (a resume skips them)
    history: list[dict] = field(default_factory=list)
    best_val_acc: float | None = None
    best_epoch: int | None = None
    plateau_scale: float = 1.0        # the plateau schedule's divisions by 10 so far
    epochs_since_best: int = 0
    wall_time_s: float = 0.0          # training time of the whole run, over every session
    schedule_step: float = 0.0        # where the learning-rate schedule is (_schedule_step): never goes back
    commands: list[str] = field(default_factory=list)   # the command that started the run, then the resumes


@dataclass
class Run:
    """What the loop works with, set up once by ``_prepare``."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    pre: Preprocess
    train_data: data.ImageData | data.StreamingData
    val_data: data.ImageData | data.StreamingData
    model: nn.Module                  # the trained weights (DistributedDataParallel wraps them as ``stepped``)
    stepped: nn.Module
    evaluated: nn.Module              # the weights that are validated and saved: the weight average, if any
    averaged: nn.Module | None
    optimizer: torch.optim.Optimizer
    order_gen: torch.Generator        # shuffling: the same on every rank
    aug_gen: torch.Generator          # augmentation, on the batch's device (no host round trip on a GPU)
    run_dir: Path
    steps_per_epoch: int
    schedule_steps: int               # the learning-rate schedule always plans the whole run
    total_steps: int                  # --max-steps cuts it short
    warmup_steps: int
    meta: dict = field(default_factory=dict)   # what every saved best.safetensors says about the run
    started_from: dict | None = None  # the start's provenance (transfer.py); None: random weights

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.safetensors"

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.safetensors"



def train(cfg: TrainConfig, on_event: Callable[[Event], None] | None = None,
          stop: threading.Event | None = None, command: str | None = None,
          given: set[str] | None = None, status_every: int | None = None, snapshots: bool = True,
          photo: Callable[[], torch.Tensor | None] | None = None) -> EndEvent:
    """Trains as ``cfg`` says, reporting through ``on_event``; returns the final EndEvent.

    ``status_every``: a StepEvent every this many steps (default: _Status's cadence). ``snapshots``: whether
    to take the network's snapshots (snapshots.py); ``photo`` is asked at each for the photo (uint8 at the run's
    store size) whose feature maps it shows. ``command`` (the command line that started the run, where there is
    one) is kept in the metadata.
    With ``cfg.resume``, the run goes on with the settings it was started with; only the settings named in
    ``given`` (default: those of ``cfg`` that differ from the defaults) override them (``resumed_config``).

    Bad settings raise ConfigError before any work. Once the run has begun, a failure (out of memory,
    data gone, …) ends it with status "failed" and a message; best.safetensors is never left broken.
    """
    emit = on_event or (lambda event: None)
    stop = stop or threading.Event()
    cfg, resume_path, overrides = _settle_config(cfg, given)
    device = resolve_device(cfg.device)
    rank, world = _distributed(device)
    if world > 1 and device.type in ("cuda", "npu"):
        device = torch.device(device.type, int(os.environ.get("LOCAL_RANK", "0")))
    check_memory(cfg, device, world)   # a batch that cannot fit is refused before any data is decoded
    torch.manual_seed(cfg.seed)
    run = _prepare(cfg, device, rank, world, resume_path)
    state = _start_state(run, resume_path, command)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if rank == 0:
        emit(StartEvent(str(run.run_dir), describe_device(device), len(run.train_data), len(run.val_data),
                        run.total_steps, run.train_data.classes,
                        describe_overrides(overrides) if overrides is not None else None))

    status, message = "finished", "Training finished."
    run_start = time.perf_counter() - state.wall_time_s
    camera = _Camera(run, emit, photo) if snapshots and rank == 0 else None
    if camera is not None and resume_path is None:
        camera.take(state, epoch=0, wall_time_s=0.0)      # the random start: the timeline's first frame
    status_line = _Status(run, emit, status_every)

    def out_of_time() -> bool:
        return bool(cfg.time_limit) and time.perf_counter() - run_start > cfg.time_limit

    try:
        while state.epoch < cfg.epochs and state.step < run.total_steps:
            epoch = state.epoch + 1
            epoch_start = time.perf_counter()
            epoch_gen_state = _encode_generator(run.order_gen)   # lets a resume replay this epoch's order
            run.stepped.train()
            tally = _Tally(device)
            batches = _train_batches(run.train_data, cfg.batch_size * world, run.order_gen, rank, world)
            for i, (images, labels) in enumerate(batches):
                if i < state.step_in_epoch:
                    continue            # resuming mid-epoch: these batches were done before the stop
                if stop.is_set() or state.step >= run.total_steps or out_of_time():
                    break
                labels = labels.to(device, non_blocking=True)
                lr = cfg.lr * lr_factor(cfg.schedule, _schedule_step(state, run, time.perf_counter() - run_start),
                                        run.schedule_steps, run.warmup_steps) * state.plateau_scale
                loss, logits = _step(run, images.to(device, non_blocking=True), labels, criterion, lr,
                                     flip=_epoch_flip(cfg.flip, epoch))
                state.step += 1
                state.step_in_epoch = i + 1
                tally.add(loss, logits, labels)
                status_line.add(loss, len(labels) * world)
                if status_line.due(state.step) or state.step_in_epoch == run.steps_per_epoch:
                    status_line.report(state, epoch, lr)
                if camera is not None and camera.due() and state.step_in_epoch < run.steps_per_epoch:
                    camera.take(state, epoch, time.perf_counter() - run_start)   # a long epoch, mid-way

            if status_line.steps:          # the steps since the last status, read before anything is saved
                status_line.report(state, epoch, lr)
            ended_early = stop.is_set() or out_of_time()
            finished_epoch = state.step_in_epoch >= run.steps_per_epoch
            state.wall_time_s = time.perf_counter() - run_start
            if finished_epoch or state.step >= run.total_steps or (ended_early and tally.seen > 0):
                # A finished epoch, --max-steps, a time limit or Stop: validate and save what there is.
                if finished_epoch:
                    state.epoch, state.step_in_epoch = epoch, 0
                    epoch_gen_state = _encode_generator(run.order_gen)
                _validate_and_save(run, state, epoch, tally, lr, (epoch_start, run_start), epoch_gen_state,
                                   emit, camera)
            if ended_early:
                status, message = "stopped", _stop_sentence(stop.is_set(), run.best_path.exists())
                break
        if status == "finished" and cfg.max_steps and state.step >= cfg.max_steps:
            message = f"Reached --max-steps {cfg.max_steps}."
        _finish_best(run, state)
    except Exception as exc:  # the run ends with a message; whatever was saved stays intact
        status, message = "failed", _failure_sentence(exc, saved=run.best_path.exists())
        _release_device_memory(device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.barrier()

    end = EndEvent(status, message, str(run.run_dir), str(run.best_path) if run.best_path.exists() else None,
                   state.best_val_acc, round(time.perf_counter() - run_start, 1))
    if rank == 0:
        emit(end)
    return end


# ---- setting up a run ----------------------------------------------------------------------------------------

def _settle_config(cfg: TrainConfig, given: set[str] | None) -> tuple[TrainConfig, Path | None, dict | None]:
    """The config to run (a resumed run's own settings, overridden by ``given``), checked; the resumable state
    to continue from, or None; and the overridden settings of a resumed run, or None."""
    resume_path, overrides = None, None
    if cfg.resume:
        resume_path = Path(cfg.resume)
        if resume_path.is_dir():
            resume_path = resume_path / "last.safetensors"
        if not resume_path.is_file():
            raise ConfigError(f"There is no resumable run at {cfg.resume} (no last.safetensors).")
        saved = _check_resumable(resume_path)
        cfg, overrides = resumed_config(cfg, saved["config"], resume_path, given)
    check_config(cfg)
    return cfg, resume_path, overrides


# What each of RunState's fields may hold in a saved state (checked before a resume does any work).
_RUN_STATE_CHECKS = {
    "epoch": lambda v: _count(v), "step": lambda v: _count(v), "step_in_epoch": lambda v: _count(v),
    "epochs_since_best": lambda v: _count(v), "best_epoch": lambda v: v is None or _count(v),
    "history": lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v),
    "best_val_acc": lambda v: v is None or checkpoints.is_finite_number(v),
    "plateau_scale": checkpoints.is_finite_number, "wall_time_s": checkpoints.is_finite_number,
    "schedule_step": checkpoints.is_finite_number,
    "commands": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
}


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_resumable(path: Path) -> dict:
    """The saved ``extra`` of a training state, checked whole before any work (checkpoints.check_train_state,
    then RunState's fields and the generators' states); CheckpointError with one sentence for what is damaged."""
    extra = checkpoints.check_train_state(path)
    bad = [name for name, ok in _RUN_STATE_CHECKS.items() if name in extra and not ok(extra[name])]
    for name in ("order_gen", "aug_gen"):
        if name in extra or name == "order_gen":
            try:
                _decode_generator(torch.Generator(), extra.get(name))
            except (TypeError, ValueError, RuntimeError, binascii.Error):
                bad.append(name)
    if bad:
        raise checkpoints.CheckpointError(f"{path.name} is damaged and cannot be resumed: its {bad[0]} is not "
                                          f"what a training state records.")
    return extra


def _prepare(cfg: TrainConfig, device: torch.device, rank: int, world: int, resume_path: Path | None) -> Run:
    """Loads the data onto the device and builds the model, its optimizer and weight average, and the plan of
    steps. Fills in ``cfg``'s defaults that depend on the data or the variant (batch norm, a batch larger than
    the data, the run folder)."""
    spec = get_spec(cfg.model)
    if cfg.batch_norm is None:
        cfg.batch_norm = spec.batch_norm
    pre = data.preprocess_for(spec, input_size=cfg.input_size, data=cfg.data)
    run_dir = Path(cfg.out) if cfg.out else _default_run_dir(cfg)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    cfg.out = str(run_dir)

    split_args = dict(val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed,
                      limit=cfg.limit)
    train_data = data.load_split(cfg.data, "train", pre, **split_args)
    val_data = data.load_split(cfg.data, "val", pre, **split_args)
    if isinstance(train_data, data.ImageData):
        train_data = train_data.to(device)
    if isinstance(val_data, data.ImageData):
        val_data = val_data.to(device)
    spec_model = spec.build(num_classes=len(train_data.classes), in_channels=pre.in_channels,
                            batch_norm=cfg.batch_norm)
    model, pretrained, started_from = _start(cfg, spec_model, world)
    model = model.to(device)
    if cfg.retrain == "classifier":   # each image's features once, before any step (transfer.py)
        train_data = transfer.cache_features(model, train_data, pre)
        started_from["feature_seconds"] = round(train_data.seconds, 2)
    elif cfg.flip == "alternating":
        train_data = _half_mirrored(train_data, cfg.seed)
    n_train = len(train_data)
    if n_train < cfg.batch_size * world:
        # Small data sets still train: one smaller batch per step instead of none at all.
        cfg.batch_size = max(2, n_train // world)
    steps_per_epoch = n_train // (cfg.batch_size * world)
    schedule_steps = steps_per_epoch * cfg.epochs
    warmup_epochs = cfg.warmup_epochs if cfg.warmup_epochs is not None else (
        0.3 * cfg.epochs if cfg.schedule == "onecycle" else 0.0)

    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.whiten:
        conv1 = first_conv(model)
        if resume_path is None:   # a resumed run loads the whitened filters it saved
            whiten_conv_(conv1, _whitening_sample(train_data, pre, device, cfg.seed))
        conv1.weight.requires_grad_(False)
    optimizer = make_optimizer(model, cfg, pretrained, transfer.PRETRAINED_LR_FACTOR)
    averaged = make_weight_average(model, cfg.ema)
    stepped = model
    if world > 1:
        stepped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return Run(cfg=cfg, device=device, rank=rank, world=world, pre=pre, train_data=train_data, val_data=val_data,
               model=model, stepped=stepped, evaluated=averaged.module if averaged is not None else model,
               averaged=averaged, optimizer=optimizer, order_gen=torch.Generator().manual_seed(cfg.seed),
               aug_gen=torch.Generator(device=device).manual_seed(cfg.seed + rank), run_dir=run_dir,
               steps_per_epoch=steps_per_epoch, schedule_steps=schedule_steps,
               total_steps=min(schedule_steps, cfg.max_steps) if cfg.max_steps else schedule_steps,
               warmup_steps=round(warmup_epochs * steps_per_epoch), started_from=started_from)


def _start(cfg: TrainConfig, model: nn.Module, world: int) -> tuple[nn.Module, set[str], dict | None]:
    """The model with its start's layers copied in (all but the last), the names of the copied parameters, and
    the start's provenance; the model as built, nothing and None for a run from random weights. A classifier-only
    run's conv layers are frozen."""
    if not cfg.start_from:
        return model, set(), None
    start = transfer.describe_start(cfg.start_from)
    pretrained = transfer.load_start(model, start, cfg.model)
    if cfg.retrain == "classifier":
        if world > 1:
            raise ConfigError("Retraining the classifier only runs in one process: its epochs are tiny; "
                              "leave out torchrun.")
        transfer.freeze_features(model)
    return model, pretrained, transfer.provenance(start, cfg.retrain)


def _start_state(run: Run, resume_path: Path | None, command: str | None) -> RunState:
    """A new run's state, or the saved one (with the model, optimizer and generators) of a resumed run; then
    the metadata every best checkpoint carries."""
    state = RunState()
    if resume_path is not None:
        try:
            extra = checkpoints.load_train_state(resume_path, run.model, run.optimizer, averaged=run.averaged,
                                                 device=run.device)
            state = RunState(**{f.name: extra[f.name] for f in dataclasses.fields(RunState) if f.name in extra})
            if "commands" not in extra and run.best_path.exists():  # a run saved before commands were kept
                state.commands = [c for c in [checkpoints.read_metadata(run.best_path).get("command")] if c]
            _decode_generator(run.order_gen, extra["order_gen"])
            if extra.get("aug_gen"):
                _decode_generator(run.aug_gen, extra["aug_gen"])
        except (KeyError, TypeError, AttributeError, RuntimeError, IndexError, binascii.Error) as error:
            # What _check_resumable cannot see from the header: tensors whose shapes or values do not fit.
            raise checkpoints.CheckpointError(f"{resume_path.name} is damaged and cannot be resumed "
                                              f"({error_reason(error)}).") from None
    if command:
        state.commands = [*state.commands, command]
    cfg = run.cfg
    run.meta = dict(data=cfg.data, data_description=data.describe_data(cfg.data),
                    config=cfg.to_dict(), device=describe_device(run.device), world_size=run.world,
                    # The command that started the run, then those that resumed it (training time adds up).
                    command=(state.commands or [None])[0], resume_commands=state.commands[1:],
                    machine=describe_machine(),
                    mixed_precision="bf16" if amp_on(run.device, cfg.amp) else "off",
                    started_from=run.started_from)
    return state


# ---- saving ----------------------------------------------------------------------------------------------------

def _save_last(run: Run, state: RunState, epoch_start_gen: str) -> None:
    """The resumable state: weights, optimizer, weight average, RunState and where the epoch's shuffle began."""
    if run.rank != 0:
        return
    extra = {**dataclasses.asdict(state), "config": run.cfg.to_dict(), "order_gen": epoch_start_gen,
             "aug_gen": _encode_generator(run.aug_gen)}
    checkpoints.save_train_state(run.last_path, run.model, run.optimizer, averaged=run.averaged, extra=extra)


def _best_meta(run: Run, state: RunState) -> dict:
    return checkpoints.model_meta(
        run.cfg.model, batch_norm=run.cfg.batch_norm, num_classes=len(run.train_data.classes),
        in_channels=run.pre.in_channels, classes=run.train_data.classes, preprocess=run.pre.to_dict(),
        epochs=state.epoch, history=state.history, best_val_acc=state.best_val_acc, best_epoch=state.best_epoch,
        wall_time_s=round(state.wall_time_s, 1), **run.meta)


def _save_best(run: Run, state: RunState) -> None:
    checkpoints.save_checkpoint(run.best_path, run.evaluated.state_dict(), _best_meta(run, state), half=run.cfg.half)


def _finish_best(run: Run, state: RunState) -> None:
    """Gives best.safetensors the whole run's history (its weights stay those of the best epoch)."""
    if run.rank == 0 and run.best_path.exists():
        weights, _ = checkpoints.load_checkpoint(run.best_path)
        checkpoints.save_checkpoint(run.best_path, weights, _best_meta(run, state), half=run.cfg.half)


# ---- helpers for the loop --------------------------------------------------------------------------------------

def _step(run: Run, images: torch.Tensor, labels: torch.Tensor, criterion: nn.Module, lr: float, *,
          flip: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch of uint8 images: augment on the device, forward, backward, update the
    weight average. Returns the loss and the logits."""
    cfg = run.cfg
    if cfg.retrain == "classifier":   # cached features: the classifier alone steps, on a view picked at random
        x, forward = transfer.pick_views(images, run.aug_gen), run.model.classifier
    else:
        x = train_transform(images, run.pre, run.aug_gen, pca_lighting=cfg.pca_lighting, cutout=cfg.cutout,
                            flip=flip, crop_pad=cfg.crop_pad)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        forward = run.stepped
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    with autocast(run.device, cfg.amp):
        logits = forward(x)
        loss = criterion(logits.float(), labels)
    # The loss stays on the device: the loop checks that it is finite when it reads it (_Status), so that a
    # GPU never waits for the host here.
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    if run.averaged is not None:
        run.averaged.update_parameters(run.model)
    return loss, logits


class _Tally:
    """An epoch's training loss and accuracy so far, summed on the device (no sync per step)."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()
        self.seen += len(labels)


class _Camera:
    """Takes the run's snapshots (snapshots.py), writes them to the run directory and reports them."""

    def __init__(self, run: Run, emit: Callable[[Event], None], photo: Callable[[], torch.Tensor | None] | None):
        self.run, self.emit, self.photo = run, emit, photo
        self.images = snaps.load_images(run.run_dir) or snaps.choose_images(run.val_data)
        snaps.save_images(run.run_dir, self.images)
        self.index = snaps.next_index(run.run_dir)
        self.taken_at = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self.taken_at >= snaps.SNAPSHOT_SECONDS

    def take(self, state: RunState, epoch: int, wall_time_s: float, result: EvalResult | None = None) -> None:
        chosen = self.photo() if self.photo is not None else None
        if chosen is not None and not torch.equal(chosen, self.images.photo):
            self.images.photo = chosen
            snaps.save_images(self.run.run_dir, self.images)
        snapshot = snaps.take(self.run.evaluated, self.run.pre, self.images, index=self.index, epoch=epoch,
                              step=state.step, wall_time_s=wall_time_s,
                              confusion=result.confusion() if result is not None else None,
                              val_acc=result.accuracy if result is not None else None,
                              channels_last=self.run.cfg.channels_last)
        path = snaps.save(self.run.run_dir, snapshot)
        self.index += 1
        self.taken_at = time.perf_counter()
        self.emit(SnapshotEvent(snapshot, self.images, str(path)))


# How often, at most, the loop reads the loss on an accelerator: each read makes the host wait for the device.
STATUS_SECONDS = 0.5


class _Status:
    """The status line of a run: the loss of the steps since the last status, summed on the device, read on the
    host (the loop's one read between validations) every ``every`` steps, or (None) at every step on a CPU, where
    the arithmetic is already done when a step returns, and about every STATUS_SECONDS on an accelerator, as
    nanoGPT logs at an interval. A loss that is not finite is refused when it is read."""

    def __init__(self, run: Run, emit: Callable[[Event], None], every: int | None):
        self.run, self.emit = run, emit
        self.every = every or (1 if run.device.type == "cpu" else None)
        self.loss_sum = torch.zeros((), device=run.device)
        self.steps = 0
        self.read_at = self.speed_start = time.perf_counter()
        self.images = 0

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.loss_sum += loss.detach()
        self.steps += 1
        self.images += images

    def due(self, step: int) -> bool:
        if self.every:
            return step % self.every == 0
        return time.perf_counter() - self.read_at >= STATUS_SECONDS

    def report(self, state: RunState, epoch: int, lr: float) -> None:
        loss, steps = (self.loss_sum / self.steps).item(), self.steps
        self.loss_sum.zero_()
        self.steps, self.read_at = 0, time.perf_counter()
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"The loss became {loss} within steps {state.step - steps + 1}–{state.step}: the learning rate "
                f"({lr:.3g}) is probably too high for this model; try a smaller one.")
        if self.run.rank == 0:
            cfg, run = self.run.cfg, self.run
            speed = self.images / max(time.perf_counter() - self.speed_start, 1e-9)
            steps_left = run.total_steps - state.step
            self.emit(StepEvent(epoch, cfg.epochs, state.step, run.total_steps, loss, lr, speed,
                                steps_left * cfg.batch_size * run.world / max(speed, 1e-9)))


def _schedule_step(state: RunState, run: Run, elapsed_s: float) -> float:
    """The step the learning-rate schedule is at: the optimizer steps taken, or, when a time limit would end the
    run before its epochs do, as far along as the time limit's share gone by: the schedule then warms up and
    anneals within the time given (budgeted training), instead of being cut off at a high rate. Never goes back,
    so a resumed run without its time limit goes on from where its schedule was."""
    planned = float(state.step)
    if run.cfg.time_limit:
        planned = max(planned, elapsed_s / run.cfg.time_limit * run.schedule_steps)
    state.schedule_step = max(state.schedule_step, min(planned, float(run.schedule_steps)))
    return state.schedule_step


def _stop_sentence(stopped: bool, saved: bool) -> str:
    message = "Stopped by the time limit." if not stopped else "Stopped."
    return message + (" The best checkpoint is kept; --resume continues the run." if saved
                      else " Nothing was trained yet, so nothing was saved.")


def _validate_and_save(run: Run, state: RunState, epoch: int, tally: _Tally, lr: float, started: tuple[float, float],
                       epoch_gen_state: str, emit: Callable[[Event], None], camera: _Camera | None) -> None:
    """Validates, keeps a new best checkpoint and the resumable state, reports the epoch, then snapshots it."""
    record, result = _validate_and_record(run, state, epoch, tally, lr, *started)
    if run.rank == 0 and record["best"]:
        _save_best(run, state)
    _save_last(run, state, epoch_gen_state)
    if run.rank == 0:
        emit(EpochEvent(**record, epochs=run.cfg.epochs))
    if camera is not None:
        camera.take(state, epoch, state.wall_time_s, result)


def _validate_and_record(run: Run, state: RunState, epoch: int, tally: _Tally, lr: float, epoch_start: float,
                         run_start: float) -> tuple[dict, EvalResult | None]:
    """Validates (rank 0), appends the epoch to the history and updates best/plateau bookkeeping. Returns the
    epoch's record (EpochEvent's fields but ``epochs``) and the validation's result (None on other ranks)."""
    cfg, seen = run.cfg, tally.seen
    if world_size() > 1:
        for t in (tally.loss_sum, tally.correct):
            dist.all_reduce(t)
        seen *= world_size()
    result = evaluate(run.evaluated, run.val_data, run.pre, device=run.device, tta=cfg.tta,
                      channels_last=cfg.channels_last) if run.rank == 0 else None
    val_acc = result.accuracy if result else 0.0
    val_loss = result.loss if result else 0.0
    is_best = run.rank == 0 and (state.best_val_acc is None or val_acc > state.best_val_acc)
    if is_best:
        state.best_val_acc, state.best_epoch, state.epochs_since_best = val_acc, epoch, 0
    else:
        state.epochs_since_best += 1
        if cfg.schedule == "plateau" and state.epochs_since_best >= cfg.plateau_patience:
            state.plateau_scale /= 10     # the paper: divide by 10 when validation stops improving
            state.epochs_since_best = 0
    state.wall_time_s = time.perf_counter() - run_start
    record = dict(epoch=epoch, step=state.step, train_loss=(tally.loss_sum / max(seen, 1)).item(),
                  train_acc=(tally.correct.float() / max(seen, 1)).item(), val_loss=val_loss, val_acc=val_acc,
                  lr=lr, seconds=round(time.perf_counter() - epoch_start, 2),
                  wall_time_s=round(state.wall_time_s, 1), best=is_best)
    state.history.append({k: (round(v, 5) if isinstance(v, float) else v) for k, v in record.items()})
    return record, result


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
    return eval_transform(torch.cat(images)[:n].to(device), pre)


def _train_batches(train_data, global_batch: int, order_gen: torch.Generator, rank: int, world: int):
    """Yields this rank's (uint8 images, labels) batches of one epoch, dropping the last partial batch."""
    for images, labels in train_data.batches(global_batch, shuffle=True, generator=order_gen, drop_last=True):
        yield images[rank::world], labels[rank::world]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# ---- when a run fails ---------------------------------------------------------------------------------------

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
