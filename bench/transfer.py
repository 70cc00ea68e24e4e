"""What starting from a trained network buys with few images (issue 26), on this machine's CPU.

    python -m bench.transfer [--data ../shared/data] [--seconds 15] [--pretrain-seconds 90] [--json]

- near transfer: alexnet_cifar_small trained from random weights on five CIFAR-10 classes (airplane, automobile,
  bird, cat, deer; 1,000 images each) for ``--pretrain-seconds``; then 5, 10 and 20 training images per class of the
  other five (dog, frog, horse, ship, truck), tested on their 5,000 test images, started three ways: the
  classifier only on the pretrained net, every layer fine-tuned from it, and random weights;
- far transfer: the shipped checkpoints/cifar10.safetensors (alexnet_cifar_fast, 32x32) as the start for flowers5,
  5, 10 and 20 training photos per class, tested on its val/ split (367 photos), the same three ways;
- the time of a classifier-only epoch on cached features against a full epoch (the loop's own step function,
  512 CIFAR-10 images, the shipped net, batch 64).

Every run of a table gets the same training time (``--seconds``: the run's time limit); computing the features of
a classifier-only run comes before it and is shown apart. For each size the three starts run one after another
(interleaved), so that whatever else loads the shared CPU hits them alike. Every run: Adam at 1e-3 (the copied
layers of a fine-tuned run at a tenth of it), constant rate, batch 32, 10 validation images per class drawn from
the training pool apart from the training images, the best validation epoch kept and then tested. ImageNet's
AlexNet is tried first: where it cannot be downloaded (this machine), the bench says so and goes on without it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from alexnet_core import imagenet, transfer
from alexnet_core.checkpoints import read_metadata
from alexnet_core.config import TrainConfig
from alexnet_core.devices import describe_machine
from alexnet_core.evaluate import evaluate_checkpoint
from alexnet_core.models import build_model
from alexnet_core.optim import make_optimizer
from alexnet_core.train import _step, train
from alexnet_core.train_settings import config_from_settings
from alexnet_core.transforms import Preprocess

REPO = Path(__file__).resolve().parents[1]
FIRST_FIVE = ["airplane", "automobile", "bird", "cat", "deer"]
OTHER_FIVE = ["dog", "frog", "horse", "ship", "truck"]
SIZES = (5, 10, 20)
STARTS = ("classifier only", "fine-tune all", "random weights")
VAL_PER_CLASS = 10
RUN = dict(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", batch_size=32, epochs=1000,
           device="cpu", half=False)


def _link_folder(dest: Path, split: str, files: dict[str, list[Path]]) -> None:
    """dest/split/<class>/ holding links to the given files (nothing is copied)."""
    for name, paths in files.items():
        folder = dest / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            (folder / path.name).symlink_to(path.resolve())


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def few_shot_folder(dest: Path, train_root: Path, test_root: Path, classes: list[str], k: int,
                    seed: int = 0) -> Path:
    """An ImageFolder of k training and VAL_PER_CLASS validation images per class, drawn at random (seeded) from
    train_root, and every image of test_root as test/."""
    rng = np.random.default_rng(seed)
    train, val = {}, {}
    for name in classes:
        pool = _images(train_root / name)
        picked = rng.choice(len(pool), k + VAL_PER_CLASS, replace=False)
        train[name] = [pool[i] for i in picked[:k]]
        val[name] = [pool[i] for i in picked[k:]]
    _link_folder(dest, "train", train)
    _link_folder(dest, "val", val)
    _link_folder(dest, "test", {name: _images(test_root / name) for name in classes})
    return dest


def run(data: Path, out: Path, seconds: float, model: str, start: str | None, retrain: str = "all") -> dict:
    """One run of ``seconds`` of training, then its best checkpoint tested."""
    settings = {**RUN, "data": str(data), "out": str(out), "time_limit": seconds}
    if start:
        settings.update(start_from=start, retrain=retrain)
    else:
        settings["model"] = model
    config, _ = config_from_settings(settings)
    end = train(config)
    assert end.best_path, end.message
    started = read_metadata(end.best_path).get("started_from") or {}
    result = evaluate_checkpoint(end.best_path, str(data), "test")
    return {"test_acc": round(100 * result.accuracy, 1), "train_s": end.wall_time_s,
            "feature_s": started.get("feature_seconds"), "test_images": result.n}


def table(name: str, train_root: Path, test_root: Path, classes: list[str], start: str, model: str,
          seconds: float, work: Path) -> list[dict]:
    rows = []
    for k in SIZES:
        folder = few_shot_folder(work / f"{name}-{k}", train_root, test_root, classes, k)
        for label, begin, retrain in zip(STARTS, (start, start, None), ("classifier", "all", "all")):
            result = run(folder, work / f"{name}-{k}-{retrain}-{bool(begin)}", seconds, model, begin, retrain)
            rows.append({"per_class": k, "start": label, **result})
            print(f"{name}: {k}/class, {label}: {result}", flush=True)
    return rows


def epoch_times(cifar: Path, batch: int = 64, images: int = 512) -> dict:
    """Seconds of one training epoch of the shipped net on ``images`` CIFAR-10 images: every layer (augmented
    images) against the classifier only on cached features; both with the loop's own step function."""
    from alexnet_core import data

    start = transfer.describe_start(str(REPO / "checkpoints" / "cifar10.safetensors"))
    pre = Preprocess(input_size=32, store_size=32, in_channels=3, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    split = data.load_split(str(cifar), "train", pre, limit=images, val_fraction=0.1)
    times = {}
    for retrain in ("all", "classifier"):
        cfg = TrainConfig(model=start.model, retrain=retrain, start_from=start.path, batch_size=batch,
                          channels_last=True, amp="off", device="cpu")
        model = build_model(start.model, num_classes=10, in_channels=3, batch_norm=start.batch_norm)
        pretrained = transfer.load_start(model, start, start.model)
        began = time.perf_counter()
        source = split
        if retrain == "classifier":
            transfer.freeze_features(model)
            source = transfer.cache_features(model, split, pre)
            times["feature_s"] = round(time.perf_counter() - began, 3)
        model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, cfg, pretrained, transfer.PRETRAINED_LR_FACTOR)
        loop = types.SimpleNamespace(cfg=cfg, pre=pre, aug_gen=torch.Generator().manual_seed(0), optimizer=optimizer,
                                     stepped=model, model=model, averaged=None, device=torch.device("cpu"))
        model.train()
        began = time.perf_counter()
        for x, y in source.batches(batch, shuffle=True, generator=torch.Generator().manual_seed(0), drop_last=True):
            _step(loop, x, y, torch.nn.CrossEntropyLoss(), 0.01, flip="random")
        times[f"{retrain}_epoch_s"] = round(time.perf_counter() - began, 3)
    times["ratio"] = round(times["classifier_epoch_s"] / times["all_epoch_s"], 4)
    return times


def imagenet_note() -> str:
    try:
        imagenet.imagenet_state_dict()
    except imagenet.ImageNetUnavailable as error:
        return f"unavailable here: {error}"
    return "available (downloaded)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seconds", type=float, default=15.0, help="training time of every few-image run")
    parser.add_argument("--pretrain-seconds", type=float, default=90.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cifar, flowers = Path(args.data) / "cifar10", Path(args.data) / "flowers5"
    began = time.perf_counter()
    report = {"machine": describe_machine(), "imagenet": imagenet_note(), "seconds_per_run": args.seconds}
    print(f"ImageNet AlexNet: {report['imagenet']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report["epoch"] = epoch_times(cifar)
        print(f"epoch: {report['epoch']}", flush=True)
        # The near start: the small net on the first five classes, for a fixed time.
        pretrain = few_shot_folder(work / "first-five", cifar / "train", cifar / "test", FIRST_FIVE, 1000)
        config, _ = config_from_settings({**RUN, "model": "alexnet_cifar_small", "data": str(pretrain),
                                          "out": str(work / "pretrain"), "time_limit": args.pretrain_seconds,
                                          "lr": 2e-3})
        end = train(config)
        report["pretrain"] = {"seconds": end.wall_time_s, "val_acc": round(100 * (end.best_val_acc or 0), 1)}
        print(f"pretrain: {report['pretrain']}", flush=True)
        report["near"] = table("near", cifar / "train", cifar / "test", OTHER_FIVE, end.best_path,
                               "alexnet_cifar_small", args.seconds, work)
        report["far"] = table("far", flowers / "train", flowers / "val", sorted(p.name for p in
                              (flowers / "train").iterdir()), str(REPO / "checkpoints" / "cifar10.safetensors"),
                              "alexnet_cifar_fast", args.seconds, work)
    report["total_s"] = round(time.perf_counter() - began, 1)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for name in ("near", "far"):
            print(f"\n{name} transfer (test accuracy %, {args.seconds:g} s of training each; features apart):")
            print("| per class | " + " | ".join(STARTS) + " |")
            for k in SIZES:
                cells = [r for r in report[name] if r["per_class"] == k]
                print(f"| {k} | " + " | ".join(
                    f"{r['test_acc']}" + (f" (+{r['feature_s']:.1f} s features)" if r["feature_s"] else "")
                    for r in cells) + " |")
        print(f"\nepoch: {report['epoch']}\ntotal {report['total_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
