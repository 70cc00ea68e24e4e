"""The optimizer, the learning-rate schedule and the weight average (an exponential moving average of the
weights) that the training loop uses."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .config import TrainConfig


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
