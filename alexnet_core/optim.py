"""The optimizer, the learning-rate schedule and the weight average (an exponential moving average of the
weights) that the training loop uses."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .config import TrainConfig


def lr_factor(schedule: str, step: float, total_steps: int, warmup_steps: int) -> float:
    """The multiplier on the base learning rate at optimizer step ``step`` (0-based; a fraction where a time
    limit plans the schedule, train._schedule_step), as nanoGPT's get_lr.

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


def make_optimizer(model: nn.Module, cfg: TrainConfig, pretrained: set[str] = frozenset(),
                   pretrained_factor: float = 1.0) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or Adam, with weight decay on weights only: biases and BatchNorm get none.

    The parameters named in ``pretrained`` (copied from a start, transfer.py) learn at ``pretrained_factor`` of
    the learning rate: each group carries its ``lr_scale``, which the loop applies at every step."""
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]   # frozen layers are left out
    groups = []
    for scale, members in ((1.0, [p for n, p in trained if n not in pretrained]),
                           (pretrained_factor, [p for n, p in trained if n in pretrained])):
        decay = [p for p in members if p.ndim >= 2]
        no_decay = [p for p in members if p.ndim < 2]
        groups += [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": scale},
                   {"params": no_decay, "weight_decay": 0.0, "lr_scale": scale}]
    groups = [group for group in groups if group["params"]]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


class WeightAverage(nn.Module):
    """An exponential moving average of a model's weights and BatchNorm statistics, with the state dict of
    torch's ``AveragedModel`` (``module.*`` and ``n_averaged``), so resumable runs load either way.

    Written here rather than taken from torch because ``AveragedModel.update_parameters`` compares its counter
    on the host at every step, and a multi_avg_fn gets that counter on the device: a host round trip per step.
    The count is kept on the host instead. The decay warms up as (1 + n) / (10 + n) so that the first steps
    are not averaged with the random start.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))
        self.decay = decay
        self.count = 0          # n_averaged on the host

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        pairs = list(zip([*self.module.parameters(), *self.module.buffers()], [*model.parameters(), *model.buffers()]))
        floats = [(a, b) for a, b in pairs if a.is_floating_point()]
        counters = [(a, b) for a, b in pairs if not a.is_floating_point()]   # BatchNorm's batches seen
        if counters:
            torch._foreach_copy_([a for a, _ in counters], [b for _, b in counters])
        if self.count == 0:
            torch._foreach_copy_([a for a, _ in floats], [b for _, b in floats])
        else:
            n = self.count
            weight = 1 - min(self.decay, (1 + n) / (10 + n))
            torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], weight)
        self.count += 1
        self.n_averaged += 1    # a CPU tensor: no device is waited for

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.count = int(self.n_averaged)
        return result


def make_weight_average(model: nn.Module, decay: float) -> WeightAverage | None:
    """The weight average of ``model`` (``--ema``), or None when decay is 0."""
    return WeightAverage(model, decay) if decay else None
