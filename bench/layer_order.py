"""How much faster alexnet_cifar_fast trains than alexnet_cifar_hires: the same layers, pools moved in front of
BatchNorm and ReLU. Measured in one process, the two bare training steps interleaved, so the ratio holds on a
shared, noisy machine even where the absolute speeds do not.

    python -m bench.layer_order [--batch-size 256] [--rounds 8] [--steps 3] [--amp auto|on|off] [--json]

Each round runs --steps training steps (forward, backward, SGD Nesterov, channels_last, bf16 autocast where the
engine would use it) of each model on one fixed batch; the speeds are totals over all rounds.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from alexnet_core.config import TrainConfig
from alexnet_core.devices import amp_on, describe_device, resolve_device, synchronize
from alexnet_core.models import build_model
from alexnet_core.optim import make_optimizer

MODELS = ("alexnet_cifar_hires", "alexnet_cifar_fast")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="steps of one model in each round")
    parser.add_argument("--amp", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    amp = amp_on(device, args.amp)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    steps = {}
    for name in MODELS:
        model = build_model(name).to(device).to(memory_format=torch.channels_last).train()
        optimizer = make_optimizer(model, TrainConfig(lr=0.01))

        def step(model=model, optimizer=optimizer):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(3):  # warm-up: oneDNN picks its kernels on the first calls
            step()
        steps[name] = step

    seconds = dict.fromkeys(MODELS, 0.0)
    for _ in range(args.rounds):
        for name in MODELS:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            synchronize(device)
            seconds[name] += time.perf_counter() - start

    images = args.batch_size * args.steps * args.rounds
    result = {
        "device": describe_device(device),
        "amp": amp,
        "batch_size": args.batch_size,
        "images_per_s": {name: round(images / seconds[name], 1) for name in MODELS},
        "speedup": round(seconds["alexnet_cifar_hires"] / seconds["alexnet_cifar_fast"], 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name in MODELS:
            print(f"{name:22s} {result['images_per_s'][name]:8.1f} images/s")
        print(f"alexnet_cifar_fast is {result['speedup']:.2f}x as fast ({result['device']}, bf16 {amp})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
