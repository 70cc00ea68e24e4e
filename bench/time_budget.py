"""Recipes compared at the same training time: each runs the project's own train command with --time-limit.

    python -m bench.time_budget [--data ../shared/data/cifar10] [--minutes 10 20 30] [--only new|old]
                                [--limit N] [--json]

For each budget, trains
- old: the recipe of the CIFAR-10 checkpoint shipped before issue 28 (alexnet_cifar_fast, run F's flags);
- new: the Studio recipe on alexnet_cifar_air (issue 28's run R1 as --recipe studio gives it),
one after the other on the same machine, both with the same seeded 5% validation split, and reports for each run
the epochs it finished, its best validation accuracy (flip, as the runs validate) and its test accuracy (flip),
from the run's own best.safetensors. The epochs asked for are more than either budget allows, so --time-limit plans
the schedule to end at the budget (budgeted training) and the runs compare fairly. Run directories go to a
temporary folder. Long: the default budgets take two hours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from alexnet_core.checkpoints import read_metadata
from alexnet_core.devices import describe_machine

COMMON = ["--val-fraction", "0.05", "--seed", "0", "--tta", "flip"]
COMMANDS = {  # the train flags of each side (not config.RECIPES: "old" is run F's flags, "new" uses --recipe studio)
    "old": ["--model", "alexnet_cifar_fast", "--batch-size", "256", "--lr", "0.1", "--momentum", "0.9", "--nesterov",
            "--weight-decay", "5e-4", "--schedule", "onecycle", "--warmup-epochs", "5", "--label-smoothing", "0.1",
            "--cutout", "10", "--ema", "0.998", "--epochs", "60"],
    "new": ["--model", "alexnet_cifar_air", "--recipe", "studio", "--warmup-epochs", "9", "--epochs", "60"],
}


def run(name: str, minutes: float, data: str, out: Path, limit: int | None = None) -> dict:
    command = [sys.executable, "-m", "alexnet_core", "train", *COMMANDS[name], *COMMON, "--data", data,
               "--time-limit", f"{minutes * 60:g}", "--out", str(out)]
    command += ["--limit", str(limit)] if limit else []
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    evaluate = [sys.executable, "-m", "alexnet_core", "evaluate", "--checkpoint", str(out / "best.safetensors"),
                "--data", data, "--split", "test", "--tta", "flip", "--json"]
    evaluate += ["--limit", str(limit)] if limit else []
    evaluated = subprocess.run(evaluate, check=True, capture_output=True, text=True).stdout
    meta = read_metadata(out / "best.safetensors")
    history = meta["history"]
    return {"recipe": name, "minutes": minutes, "epochs": history[-1]["epoch"],
            "train_minutes": round(history[-1]["wall_time_s"] / 60, 1),
            "best_val_acc": max(h["val_acc"] for h in history), "test_acc_flip": json.loads(evaluated)["accuracy"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/cifar10")
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 20, 30])
    p.add_argument("--only", choices=list(COMMANDS), help="one recipe only")
    p.add_argument("--limit", type=int, help="at most this many images per split (a quick check, not a measurement)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="time-budget-") as tmp:
        for minutes in args.minutes:
            for name in [args.only] if args.only else list(COMMANDS):
                rows.append(run(name, minutes, args.data, Path(tmp) / f"{name}-{minutes:g}", args.limit))
                if not args.json:
                    r = rows[-1]
                    print(f"{r['recipe']:>3}  {r['minutes']:>4g} min  {r['epochs']:>3} epochs  "
                          f"best val {r['best_val_acc']:.2%}  test (flip) {r['test_acc_flip']:.2%}", flush=True)
    if args.json:
        print(json.dumps({"machine": describe_machine(), "runs": rows}, indent=2))
    else:
        print(describe_machine())


if __name__ == "__main__":
    main()
