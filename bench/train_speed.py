"""How fast the training engine is, measured in one process on one model and machine.

    python -m bench.train_speed [--data ../shared/data/cifar10] [--steps 100] [--amp auto|on|off] [--json]
                                [--device cuda] [--model alexnet_cifar_fast --batch-size 512]

Measures, for alexnet_cifar at batch 128 or --model at --batch-size (channels_last, SGD Nesterov, mixed
precision as --amp says — the engine's own default is auto: bf16 where the device gains from it — all as the
engine trains it):
- images_per_s: the whole training loop (data already decoded in memory, augmentation a batch at a time,
  the step), read from the engine's own StepEvents;
- bare_step_images_per_s: the bare training step on one fixed batch, measured before and after the loop;
- sgemm: a 4096x4096 float32 matrix product, the machine's practical FLOP/s ceiling;
- tutorial_loop_images_per_s: the tutorials' loop: torchvision ImageFolder, per-sample PIL transforms,
  a DataLoader with 2 workers, the same model and step.
efficiency = images_per_s / bare; flop_fraction = the bare step's FLOP/s / sgemm's FLOP/s. Because
torch.matmul (MKL) and the convolutions (oneDNN) use different libraries, the same product done as a 1x1
convolution is measured too (flop_fraction_vs_onednn); the step's FLOPs are counted by flop_counter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from alexnet_core import data
from alexnet_core.config import TrainConfig
from alexnet_core.devices import amp_on, describe_device, resolve_device, synchronize
from alexnet_core.events import StepEvent
from alexnet_core.models import build_model, get_spec
from alexnet_core.optim import make_optimizer
from alexnet_core.train import train

MODEL, BATCH = "alexnet_cifar", 128


def bare_step(device: torch.device, steps: int, amp: str) -> tuple[float, float]:
    """(images/s, FLOP per step) of forward + backward + SGD on one fixed batch."""
    model = build_model(MODEL).to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, TrainConfig(lr=0.01))
    x = torch.randn(BATCH, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_on(device, amp)):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(3):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return BATCH * steps / (time.perf_counter() - start), counter.get_total_flops()


def sgemm_flops(device: torch.device, n: int = 4096, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def onednn_gemm_flops(device: torch.device, n: int = 1024, repeats: int = 5) -> float:
    """The same matrix product as sgemm, done as a 1x1 convolution: on CPUs that goes to oneDNN, as the
    model's convolutions do, while torch.matmul goes to MKL (which skips its AVX-512 paths on AMD CPUs)."""
    x = torch.randn(64, n, 16, 16, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1, device=device).contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        torch.nn.functional.conv2d(x, w)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.conv2d(x, w)
    synchronize(device)
    return 2 * 64 * 16 * 16 * n * n * repeats / (time.perf_counter() - start)


def whole_loop(data_dir: str, device: torch.device, steps: int, amp: str) -> float:
    """images/s of the engine's real loop, from the steps and times of its StepEvents (the first 5 steps
    skipped). A StepEvent comes at the status cadence (every step on a CPU, about twice a second on an
    accelerator), so the images are counted from the step numbers, not from the number of events."""
    seen: list[tuple[int, float]] = []

    def on_event(event):
        if isinstance(event, StepEvent):
            seen.append((event.step, time.perf_counter()))

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(model=MODEL, data=data_dir, batch_size=BATCH, epochs=1, max_steps=steps + 5,
                             device=str(device), out=out, limit=None, amp=amp)
        train(config, on_event)
    measured = [(step, t) for step, t in seen if step > 5]
    (first_step, first_time), (last_step, last_time) = measured[0], measured[-1]
    return BATCH * (last_step - first_step) / (last_time - first_time)


def tutorial_loop(data_dir: str, device: torch.device, steps: int) -> float:
    """images/s of the tutorials' way: PIL transforms per sample in DataLoader workers."""
    from torchvision import datasets, transforms

    spec = get_spec(MODEL)
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(spec.mean, spec.std)])
    dataset = datasets.ImageFolder(str(Path(data_dir) / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True,
                                         persistent_workers=False)
    model = build_model(MODEL).to(device)
    optimizer = make_optimizer(model, TrainConfig(lr=0.01))
    start = None
    for i, (x, y) in enumerate(loader):
        if i == 5:
            synchronize(device)
            start = time.perf_counter()
        if i == steps + 5:
            break
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return BATCH * steps / (time.perf_counter() - start)


def main() -> None:
    global MODEL, BATCH   # the measuring functions read them
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                        help="bf16 mixed precision for the loop and the bare step alike (the tutorial loop stays fp32)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--model", default=MODEL, help=f"the variant to train (default {MODEL})")
    parser.add_argument("--batch-size", type=int, default=BATCH, help=f"the batch (default {BATCH})")
    args = parser.parse_args()
    device = resolve_device(args.device)
    MODEL, BATCH = args.model, args.batch_size

    # Decode (or load from the cache) once, so the loop measures training and not the first JPEG decode.
    data.load_split(args.data, "train", data.preprocess_for(get_spec(MODEL), data=args.data))

    bare_before, flops = bare_step(device, args.steps, args.amp)
    whole = whole_loop(args.data, device, args.steps, args.amp)
    bare_after, _ = bare_step(device, args.steps, args.amp)
    sgemm = sgemm_flops(device)
    onednn = onednn_gemm_flops(device)
    tutorial = tutorial_loop(args.data, device, args.steps)
    bare = statistics.mean([bare_before, bare_after])
    result = {
        "device": describe_device(device), "model": MODEL, "batch_size": BATCH,
        "mixed_precision": "bf16" if amp_on(device, args.amp) else "off",
        "images_per_s": round(whole, 1),
        "bare_step_images_per_s": round(bare, 1),
        "efficiency": round(whole / bare, 3),
        "step_gflop_per_s": round(flops * bare / BATCH / 1e9, 1),
        "sgemm_gflop_per_s": round(sgemm / 1e9, 1),
        "flop_fraction": round(flops * bare / BATCH / sgemm, 3),
        "onednn_gemm_gflop_per_s": round(onednn / 1e9, 1),
        "flop_fraction_vs_onednn": round(flops * bare / BATCH / onednn, 3),
        "tutorial_loop_images_per_s": round(tutorial, 1),
        "speedup_vs_tutorial": round(whole / tutorial, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")


if __name__ == "__main__":
    main()
