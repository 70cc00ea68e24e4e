"""How close memory.py's estimate is to what one training step really takes.

    python -m bench.memory_estimate [--device cpu|cuda] [--amp auto|on|off] [--json]
    python -m bench.memory_estimate --child MODEL BATCH [--device …] [--amp …]   # one measurement

Each measurement runs in a fresh process: it builds the model and optimizer as train() does, makes a batch of
uint8 images at the store size, then measures one whole step (augmentation, forward, loss, backward,
optimizer step: the first, which also allocates the gradients and the momentum). On a CPU the step's memory is
the rise of the peak resident set (VmHWM, reset just before through /proc/self/clear_refs) over the resident
set before the step; on CUDA torch.cuda.max_memory_allocated over memory_allocated. It is compared with the
estimate's part for that step, unscaled (without memory.SAFETY): activations kept for the backward pass times
the batch, plus gradients, optimizer state and bf16 weight copies.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

import torch

from alexnet_core import data, memory, transforms
from alexnet_core.config import TrainConfig
from alexnet_core.devices import amp_on, autocast, resolve_device
from alexnet_core.models import get_spec
from alexnet_core.optim import make_optimizer

CASES = [("alexnet_cifar_small", 8), ("alexnet_cifar_small", 256), ("alexnet_cifar", 256),
         ("alexnet_cifar_hires", 64), ("alexnet_flowers", 32), ("alexnet", 32), ("alexnet", 96)]
NUM_CLASSES = 10


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_step(model: str, batch: int, device: str = "cpu", amp: str = "auto") -> dict:
    """One training step's memory, measured, beside the estimate's (unscaled) part for it."""
    device = resolve_device(device)
    spec = get_spec(model)
    cfg = TrainConfig(model=model, batch_size=batch, device=str(device), amp=amp, batch_norm=spec.batch_norm)
    pre = data.preprocess_for(spec)
    net = spec.build(num_classes=NUM_CLASSES).to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(net, cfg)
    images = torch.randint(0, 256, (batch, pre.in_channels, pre.store_size, pre.store_size), dtype=torch.uint8,
                           device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    bf16 = amp_on(device, amp)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set
    x = transforms.train_transform(images, pre, torch.Generator(device=device).manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp):
        loss = torch.nn.functional.cross_entropy(net(x).float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        measured = torch.cuda.max_memory_allocated(device) - before
    else:
        measured = _status("VmHWM") - before
    training, _ = memory.activation_bytes(model, pre.input_size, batch_norm=spec.batch_norm,
                                          num_classes=NUM_CLASSES, in_channels=pre.in_channels, bf16=bf16)
    weights = sum(p.numel() for p in net.parameters()) * 4
    estimated = training * batch + weights * 2 + (weights // 2 if bf16 else 0)  # + gradients, momentum, bf16
    return {"model": model, "batch": batch, "device": str(device), "bf16": bf16, "measured": measured,
            "estimated_unscaled": estimated, "ratio": round(measured / estimated, 3),
            "per_image_unscaled": training}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "BATCH"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_step(args.child[0], int(args.child[1]), args.device, args.amp)))
        return
    rows = []
    for model, batch in CASES:
        out = subprocess.run([sys.executable, "-m", "bench.memory_estimate", "--child", model, str(batch),
                              "--device", args.device, "--amp", args.amp],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        if not args.json:
            r = rows[-1]
            print(f"{model:<20} batch {batch:>4}  bf16 {str(r['bf16']):<5}  measured {r['measured'] / 2**20:8.1f} MiB"
                  f"  estimate (unscaled) {r['estimated_unscaled'] / 2**20:8.1f} MiB  ratio {r['ratio']:.2f}",
                  flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
