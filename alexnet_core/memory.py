"""How much memory a training run needs, estimated from shapes before it starts, and how much it may use.

A batch that does not fit is not an error PyTorch reports politely: on a CPU the process grows until the
kernel kills it (with the app and every visitor's work), on a GPU it fails mid-step. So ``train()`` and the
app's runner check the setting first, with pure arithmetic on what ``summary.py`` already knows:

* per image, the activations autograd keeps for the backward pass: every layer's output (from the exact
  summary), with an in-place ReLU adding nothing, a max-pool adding its int64 indices, LRN the few
  intermediates PyTorch's ``local_response_norm`` keeps, dropout its mask; plus the network input (the
  augmentation's float copies) and the two largest gradients that flow back at once;
* once per run: the weights, their gradients, the optimizer's state (SGD momentum: one copy, Adam: two),
  the weight average (``--ema``), bf16 copies of the weights under mixed precision, the decoded uint8 data
  set held in memory, and one validation batch.

The sum is multiplied by ``SAFETY`` (measured: bench/memory_estimate.py runs real steps and compares).
What the process may use is the free memory of the device: ``torch.cuda.mem_get_info`` on CUDA, else the
host's ``MemAvailable`` and the cgroup's limit less its usage, whichever is smaller;
``ALEXNET_STUDIO_MEMORY_BUDGET`` (bytes, or with K/M/G/T) sets it instead (tests, or a host to share).
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import IN_MEMORY_LIMIT  # larger splits are streamed, not held
from .summary import summarize

# Images per forward pass when measuring (evaluate.py; validation after each epoch included): estimate counts it.
EVAL_BATCH = 256

# Measured peaks of one training step were 0.7–1.14 of the unscaled estimate on a CPU at batches from 32 to 256
# (bench/memory_estimate.py, docs/benchmarks.md); the margin covers that spread and allocator slack.
SAFETY = 1.5
BUDGET_ENV = "ALEXNET_STUDIO_MEMORY_BUDGET"


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs: ``fixed`` whatever the batch, plus ``per_image`` for each image of a batch."""

    per_image: int
    fixed: int
    parts: dict[str, int]   # the fixed part by item (weights, gradients, optimizer, …), for reports

    def total(self, batch_size: int) -> int:
        return self.fixed + batch_size * self.per_image

    def largest_batch(self, budget: int) -> int:
        """The largest batch whose total fits in ``budget`` bytes (0 when not even one image fits)."""
        return max(0, (budget - self.fixed) // self.per_image)


def _elements(shape: list[int]) -> int:
    return math.prod(shape[1:])   # without the batch dimension


def activation_bytes(model: str, input_size: int, *, batch_norm: bool, num_classes: int, in_channels: int,
                     bf16: bool = False) -> tuple[int, int]:
    """(bytes one image's training step keeps for the backward pass, bytes of a forward pass without grad),
    unscaled, from the layer shapes of the exact summary."""
    summary = summarize(model, input_size, batch_norm=batch_norm, num_classes=num_classes,
                        in_channels=in_channels)
    size = 2 if bf16 else 4    # under bf16 autocast convolutions and linear layers give bf16 outputs
    kept = 0
    for row in summary.layers:
        n = _elements(row.output_shape)
        if row.type in ("ReLU", "Flatten"):
            continue                         # in place, or a view
        if row.type == "LocalResponseNorm":
            kept += 4 * n * 4                # x², its windowed average, the divisor and the output, in fp32
        elif row.type == "MaxPool2d":
            kept += n * (size + 8)           # the output and the int64 indices of each maximum
        elif row.type == "Dropout":
            kept += n * (size + 1)           # the output and the bool mask
        else:
            kept += n * size                 # Conv2d, BatchNorm2d, Linear, pools: the output
    largest = max(_elements(row.output_shape) for row in summary.layers) * 4
    image = in_channels * input_size ** 2 * 4
    training = kept + 3 * image + 2 * largest     # + the augmented input's copies + gradients in flight
    forward = image + 2 * largest                 # no grad: two layers' outputs at a time
    return training, forward


def estimate(cfg, *, input_size: int, store_size: int, num_classes: int, in_channels: int, images: int,
             bf16: bool, host: bool = True, cached_features: int = 0) -> Estimate:
    """What a run of ``cfg`` (a TrainConfig) needs: ``images`` is the number of training and validation
    images held in memory; ``host`` whether the data is decoded in the same memory (CPU training);
    ``cached_features`` the feature vectors a classifier-only run keeps (transfer.py), each the classifier's
    input in fp32."""
    summary = summarize(cfg.model, input_size, batch_norm=bool(cfg.batch_norm), num_classes=num_classes,
                        in_channels=in_channels)
    training, forward = activation_bytes(cfg.model, input_size, batch_norm=bool(cfg.batch_norm),
                                         num_classes=num_classes, in_channels=in_channels, bf16=bf16)
    weights = summary.total_params * 4
    image_bytes = in_channels * store_size ** 2
    data_bytes = images * image_bytes if images * image_bytes <= IN_MEMORY_LIMIT else 0
    states = {"sgd": 1 if cfg.momentum else 0, "adam": 2}.get(cfg.optimizer, 2)
    parts = {
        "weights": weights,
        "gradients": weights,
        "optimizer": states * weights,
        "weight average": weights if cfg.ema else 0,
        "bf16 weights": weights // 2 if bf16 else 0,
        # Decoding writes the data to the cache, which briefly holds a second copy in memory.
        "data": data_bytes * (2 if host else 1),
        "validation batch": EVAL_BATCH * forward * (2 if cfg.tta == "flip" else 1),
        "feature cache": cached_features * _classifier_inputs(summary) * 4,
    }
    return Estimate(per_image=math.ceil(training * SAFETY), fixed=math.ceil(sum(parts.values()) * SAFETY),
                    parts=parts)


def _classifier_inputs(summary) -> int:
    """How many numbers the classifier takes per image: the flattened output of the conv layers."""
    flat = [row for row in summary.layers if row.type == "Flatten"]
    return _elements(flat[0].output_shape) if flat else 0


# ---- what the process may use ------------------------------------------------------------------------------

def parse_bytes(text: str) -> int:
    """'8G', '512M', '2.5GiB' or a plain number of bytes → bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{BUDGET_ENV} must be a number of bytes such as 8G or 512M, not {text!r}.")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_room(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup's memory limit less its usage (v2: memory.max, v1: memory.limit_in_bytes), or None."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":                                   # v2
            base = root / path.lstrip("/")
            limit, used = _read_int(base / "memory.max"), _read_int(base / "memory.current")
        elif "memory" in controllers.split(","):                # v1
            base = root / "memory" / path.lstrip("/")
            limit, used = _read_int(base / "memory.limit_in_bytes"), _read_int(base / "memory.usage_in_bytes")
        else:
            continue
        if limit is not None and limit < 1 << 60:               # "max" (v2) or a huge number (v1): no limit
            rooms.append(max(0, limit - (used or 0)))
    return min(rooms) if rooms else None


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes(device: torch.device | str = "cpu") -> tuple[int | None, str]:
    """(bytes this process may still allocate on ``device``, where that figure comes from); (None, …) where
    it cannot be known (the check is then skipped)."""
    if os.environ.get(BUDGET_ENV):
        return parse_bytes(os.environ[BUDGET_ENV]), BUDGET_ENV
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], f"free on {device}"
    if device.type == "npu" and hasattr(torch, "npu") and hasattr(torch.npu, "mem_get_info"):
        return torch.npu.mem_get_info(device)[0], f"free on {device}"
    figures = [(b, s) for b, s in ((_mem_available(), "available"), (cgroup_room(), "left under the cgroup's limit"))
               if b is not None]
    return min(figures) if figures else (None, "unknown")


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def refusal(est: Estimate, batch_size: int, budget: int | None, source: str, model: str,
            asked: int | None = None) -> str | None:
    """One sentence when a batch of ``batch_size`` does not fit in ``budget``, naming the largest that does;
    None when it fits (or the budget is unknown). ``asked``: the batch size set, where the data is smaller."""
    if budget is None or est.total(batch_size) <= budget:
        return None
    batches = f"batches of {batch_size:,}" + (
        f" (every training image; {asked:,} was asked)" if asked and asked != batch_size else "")
    start = (f"Training {model} on {batches} needs about {gib(est.total(batch_size))} of memory, "
             f"but this process may use {gib(budget)} ({source})")
    largest = est.largest_batch(budget)
    if largest < 2:
        return f"{start}; not even a batch of 2 fits: use a smaller model, input size or fewer images per split."
    return f"{start}; the largest batch that fits is {largest:,}."


# ---- evaluation, prediction and Grad-CAM -------------------------------------------------------------------

class MemoryRefusal(ValueError):
    """Work that would need more memory than this process may use; the message is one sentence."""


@functools.lru_cache(maxsize=256)   # prediction checks it per photo: the shapes' arithmetic once per checkpoint
def inference_estimate(model: str, pre, *, batch_norm: bool, num_classes: int, views: int = 1, grad: bool = False,
                       in_flight: int = 1) -> Estimate:
    """What running ``model`` on images prepared by ``pre`` (a transforms.Preprocess) needs: per image of a
    batch, its decoded uint8 copies (``in_flight``: a DataLoader decodes batches ahead), and for each of its
    ``views`` the float input and the forward pass (with ``grad``, what Grad-CAM's backward pass keeps); once,
    the weights. Data held in memory is added by the caller (``stored_bytes``)."""
    training, forward = activation_bytes(model, pre.input_size, batch_norm=batch_norm, num_classes=num_classes,
                                         in_channels=pre.in_channels)
    weights = summarize(model, pre.input_size, batch_norm=batch_norm, num_classes=num_classes,
                        in_channels=pre.in_channels).total_params * 4
    view_input = pre.in_channels * pre.input_size ** 2 * 4
    per_image = stored_bytes(pre) * in_flight + views * ((training if grad else forward) + 2 * view_input)
    parts = {"weights": weights * (2 if grad else 1)}   # Grad-CAM: the weights' gradients too
    return Estimate(per_image=math.ceil(per_image * SAFETY), fixed=math.ceil(sum(parts.values()) * SAFETY),
                    parts=parts)


def stored_bytes(pre) -> int:
    """One image as decode_image keeps it: uint8 at the store size."""
    return pre.in_channels * pre.store_size ** 2


def check_inference(what: str, model: str, pre, *, batch_norm: bool, num_classes: int, views: int = 1,
                    grad: bool = False, device: torch.device | str = "cpu") -> None:
    """Raises MemoryRefusal with one sentence when one image (``views`` views of it) would not fit: ``what``
    names the work ("Predicting with ten-crop", "Grad-CAM")."""
    est = inference_estimate(model, pre, batch_norm=batch_norm, num_classes=num_classes, views=views, grad=grad)
    budget, source = available_bytes(device)
    if budget is not None and est.total(1) > budget:
        raise MemoryRefusal(
            f"{what} with {model} at {pre.input_size}x{pre.input_size} pixels (images stored at "
            f"{pre.store_size}x{pre.store_size}) needs about {gib(est.total(1))} of memory for one image, but this "
            f"process may use {gib(budget)} ({source}); use a checkpoint with a smaller input or store size"
            + (" or fewer test-time views." if views > 1 else "."))


def evaluation_batch(model: str, pre, *, batch_norm: bool, num_classes: int, images: int, held: bool, views: int,
                     decoding: int, in_flight: int, batch_size: int, device: torch.device | str = "cpu") -> int:
    """The batch an evaluation of ``images`` images can use (``batch_size`` or less), or MemoryRefusal with one
    sentence that says how many images would fit. ``held``: the decoded images are held in memory (twice while
    they are written to the cache, and ``decoding`` more in flight while they are decoded); else they are
    streamed, ``in_flight`` copies of each batch at a time."""
    est = inference_estimate(model, pre, batch_norm=batch_norm, num_classes=num_classes, views=views,
                             in_flight=1 if held else in_flight)
    one = stored_bytes(pre)
    data = math.ceil((2 * images + decoding) * one * SAFETY) if held else 0
    budget, source = available_bytes(device)
    batch = max(1, min(batch_size, images))
    if budget is None or data + est.total(batch) <= budget:
        return batch
    if data + est.total(1) <= budget:
        return max(1, min(batch, (budget - data - est.fixed) // est.per_image))
    start = (f"Evaluating {model} on {images:,} images stored at {pre.store_size}x{pre.store_size} needs about "
             f"{gib(data + est.total(1))} of memory, but this process may use {gib(budget)} ({source})")
    # Each image held costs two copies, and up to one more while it is decoded.
    fit = (budget - est.total(1)) // math.ceil(3 * one * SAFETY) if held else 0
    if fit >= 1:
        sentence = f"{start}; at most {fit:,} images fit: evaluate fewer images."
    else:
        sentence = (f"{start}; not even one image fits: use a checkpoint with a smaller input or store "
                           f"size.")
    raise MemoryRefusal(sentence)
