"""What the network's snapshots (alexnet_core/snapshots.py) cost a training run, at their default cadence.

    python -m bench.snapshots [--data ../shared/data/cifar10] [--limit 4000] [--epochs 2] [--pairs 2]

For alexnet_cifar_small and alexnet_cifar_fast, runs the same training with snapshots and without, interleaved in
one process after one warm-up run (with, without, without, with, … so that a drift in the machine's speed hits
both alike), and reports:
- overhead: the mean training time with snapshots over the mean without, minus 1;
- in_run_fraction: the time spent inside the snapshot work itself (taking, writing) over the run's training
  time, measured in the runs with snapshots: the same cost without the noise of comparing two runs.
A small --limit makes the epochs short, so validations (and their snapshots) come often: the fraction measured is
an upper bound for longer epochs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from alexnet_core import data, snapshots
from alexnet_core.config import TrainConfig
from alexnet_core.devices import describe_device, describe_machine, resolve_device
from alexnet_core.models import get_spec
from alexnet_core.train import train

MODELS = ("alexnet_cifar_small", "alexnet_cifar_fast")


class _Timed:
    """Wraps snapshots.take and snapshots.save to add up the time spent in them."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def __enter__(self):
        self.take, self.save = snapshots.take, snapshots.save

        def timed(function):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - start
                    self.calls += function is self.take

            return wrapper

        snapshots.take, snapshots.save = timed(self.take), timed(self.save)
        return self

    def __exit__(self, *exc):
        snapshots.take, snapshots.save = self.take, self.save


def one_run(model: str, args, with_snapshots: bool) -> dict:
    with tempfile.TemporaryDirectory() as out, _Timed() as timer:
        config = TrainConfig(model=model, data=args.data, epochs=args.epochs, limit=args.limit, out=out,
                             device=args.device, batch_size=128)
        start = time.perf_counter()
        end = train(config, snapshots=with_snapshots)
        seconds = time.perf_counter() - start
    if end.status != "finished":
        raise SystemExit(f"{model}: {end.message}")
    return {"seconds": seconds, "snapshot_seconds": timer.seconds, "snapshots": timer.calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"))
    parser.add_argument("--limit", type=int, default=4000, help="images per split (default 4000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=2, help="runs with and without, each (default 2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {"machine": describe_machine(), "device": describe_device(resolve_device(args.device)),
               "limit": args.limit, "epochs": args.epochs}
    for model in MODELS:
        # Decode (or load from the cache) once, so no run pays for the first JPEG decode.
        data.load_split(args.data, "train", data.preprocess_for(get_spec(model), data=args.data), limit=args.limit)
        one_run(model, args, with_snapshots=False)    # a first run warms up what every later run reuses
        with_runs, without_runs = [], []
        for pair in range(args.pairs):
            order = (True, False) if pair % 2 == 0 else (False, True)
            for with_snapshots in order:
                run = one_run(model, args, with_snapshots)
                (with_runs if with_snapshots else without_runs).append(run)
                print(f"{model} {'with' if with_snapshots else 'without'} snapshots: {run}", file=sys.stderr,
                      flush=True)
        with_s = statistics.mean(r["seconds"] for r in with_runs)
        without_s = statistics.mean(r["seconds"] for r in without_runs)
        results[model] = {
            "seconds_with": round(with_s, 2), "seconds_without": round(without_s, 2),
            "overhead": round(with_s / without_s - 1, 4),
            "in_run_fraction": round(statistics.mean(r["snapshot_seconds"] / r["seconds"] for r in with_runs), 4),
            "snapshots_per_run": with_runs[0]["snapshots"],
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:22s} {value}")


if __name__ == "__main__":
    main()
