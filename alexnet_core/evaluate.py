"""Accuracy, per-class accuracy and the confusion matrix of a model on a data split.

Used by the training loop (validation after each epoch), by ``python -m alexnet_core evaluate`` and by the
app's Evaluate view. The images go through ``transforms.tta_views``, the same function prediction uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoints, memory
from .data import ImageData, StreamingData, class_names, describe_data, labelled_folder, load_folder, load_split
from .memory import EVAL_BATCH
from .transforms import TTA_VIEWS, Preprocess, average_views, check_tta, tta_views


@dataclass
class EvalResult:
    classes: list[str]
    labels: torch.Tensor        # [N] true class per image
    predictions: torch.Tensor   # [N] predicted class
    confidences: torch.Tensor   # [N] probability of the predicted class
    loss: float                 # mean cross-entropy
    paths: list[str] | None = None  # each image's file, where the data has files
    images: torch.Tensor | None = None  # uint8 [N, C, S, S] where it has none (built-in data sets): to show them
    measured: str = ""          # which images these are, in words ("every image in DIR/test (40)", …)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float:
        return (self.predictions == self.labels).float().mean().item() if self.n else 0.0

    def confusion(self) -> torch.Tensor:
        """confusion[true, predicted] counts."""
        k = len(self.classes)
        return torch.bincount(self.labels * k + self.predictions, minlength=k * k).reshape(k, k)

    def class_counts(self) -> dict[str, tuple[int, int]]:
        """(correct, images) per true class, from the confusion matrix; classes without images are left out."""
        cm = self.confusion()
        totals = cm.sum(1)
        return {c: (int(cm[i, i]), int(totals[i])) for i, c in enumerate(self.classes) if totals[i] > 0}

    def per_class(self) -> dict[str, float]:
        """Accuracy per true class (recall); classes without images are left out."""
        return {c: correct / total for c, (correct, total) in self.class_counts().items()}

    def most_confident_mistakes(self, k: int = 12) -> list[int]:
        """Indices of the wrong predictions made with the highest confidence."""
        wrong = (self.predictions != self.labels).nonzero().flatten()
        order = self.confidences[wrong].argsort(descending=True)
        return wrong[order[:k]].tolist()

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "per_class": self.per_class(),
                "confusion": self.confusion().tolist(), "n": self.n, "loss": self.loss,
                "classes": self.classes, "measured": self.measured}


@torch.no_grad()
def evaluate(model: nn.Module, split: ImageData | StreamingData, pre: Preprocess, *,
             device: torch.device | str = "cpu", tta: str = "none", batch_size: int = EVAL_BATCH,
             channels_last: bool = True, pad: int | None = None) -> EvalResult:
    """Runs ``model`` over every image of ``split`` and collects what the metrics need. ``pad`` overrides
    ten-crop's padding of images stored at their input size (``transforms.small_image_pad``)."""
    check_tta(tta)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    labels, predictions, confidences, loss_sum = [], [], [], 0.0
    for images, y in split.batches(batch_size, shuffle=False, generator=None, drop_last=False):
        images, y = images.to(device), y.to(device)
        x = tta_views(images, pre, tta, pad=pad)   # the views prediction uses, TTA_VIEWS[tta] per image
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        probs = average_views(model(x), tta)
        loss_sum += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum").item()
        conf, pred = probs.max(1)
        labels.append(y.cpu()), predictions.append(pred.cpu()), confidences.append(conf.cpu())
    model.train(was_training)
    n = sum(len(y) for y in labels)
    paths = getattr(split, "paths", None)  # a StreamingData always has files; an ImageData may not
    return EvalResult(split.classes, torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
                      torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long),
                      torch.cat(confidences) if confidences else torch.zeros(0),
                      loss_sum / max(n, 1), paths, images=split.images if paths is None else None)


def evaluate_checkpoint(checkpoint: str | Path, data: str, split: str = "test", *, device: str = "cpu",
                        tta: str = "none", limit: int | None = None, batch_size: int = EVAL_BATCH) -> EvalResult:
    """Loads a checkpoint and evaluates it on ``split`` of ``data``, preprocessing as it was trained.
    The result's ``measured`` says which images it measured, and how many."""
    model, pre, split_data, measured, batch = _prepare(checkpoint, data, split, device=device, limit=limit, tta=tta,
                                                       batch_size=batch_size)
    result = evaluate(model, split_data, pre, device=device, tta=tta, batch_size=batch)
    result.measured = measured
    return result


def load_for_evaluation(checkpoint: str | Path, data: str, split: str = "test", *, device: str = "cpu",
                        limit: int | None = None, tta: str = "ten-crop"
                        ) -> tuple[nn.Module, Preprocess, ImageData, int]:
    """A checkpoint's model and preprocessing, ``split`` of ``data`` prepared for it, and the batch that fits
    in memory with ``tta`` (or a memory.MemoryRefusal before any image is decoded).

    Validation and test splits carved from train are carved exactly as during training (same fractions
    and seed), so a held-out test split stays held out. A folder of labelled photos that is not the
    checkpoint's training data (no train/ folder: DIR/test/<class>/, DIR/val/<class>/ or DIR/<class>/) is
    measured whole (``labelled_folder``).
    """
    model, pre, split_data, _, batch = _prepare(checkpoint, data, split, device=device, limit=limit, tta=tta,
                                                batch_size=EVAL_BATCH)
    return model, pre, split_data, batch


def _same_data(a: str, b: str | None) -> bool:
    """Whether two data names are the same data set (a folder however its path is spelled)."""
    if b is None:
        return False
    if a == b:
        return True
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve() and Path(a).expanduser().is_dir()
    except (OSError, RuntimeError):
        return False


def _memory_check(meta: dict, pre: Preprocess, tta: str, batch_size: int, device: str, chosen: list[int]):
    """The check the loaders call before decoding (data.MemoryCheck): the images and the batch must fit in the
    memory this process may use (memory.evaluation_batch); the batch that fits is put in ``chosen``."""
    from .data import streaming_copies

    def check(images: int, held: bool, decoding: int) -> None:
        chosen.append(memory.evaluation_batch(
            meta["model"], pre, batch_norm=meta["batch_norm"], num_classes=meta["num_classes"], images=images,
            held=held, views=TTA_VIEWS[check_tta(tta)], decoding=decoding,
            in_flight=streaming_copies(), batch_size=batch_size,
            device="cpu" if torch.device(device).type == "cpu" else device))

    return check


def _prepare(checkpoint: str | Path, data: str, split: str, *, device: str, limit: int | None, tta: str = "none",
             batch_size: int = EVAL_BATCH):
    model, meta = checkpoints.load_model(checkpoint, device=device)
    pre = Preprocess.from_dict(meta["preprocess"])
    chosen: list[int] = []
    check = _memory_check(meta, pre, tta, batch_size, device, chosen)
    config = meta["config"] if isinstance(meta.get("config"), dict) else {}
    classes = list(meta["classes"])
    # Only where it is the data the checkpoint was trained on are its held-out splits carved the same way;
    # any other folder of labelled photos is measured whole (its own test/ or val/ folder, or itself).
    same_data = _same_data(data, config.get("data"))
    folder = None if same_data else labelled_folder(data, split)
    if folder is not None:
        found = class_names(str(folder))  # its class folders: the real ones, not "test" or "val"
        if unknown := [c for c in found if c not in classes]:
            raise ValueError(
                f"{folder} has class folders this checkpoint was not trained on ({', '.join(unknown[:5])}"
                f"{'…' if len(unknown) > 5 else ''}); its classes are {', '.join(classes[:10])}"
                f"{'…' if len(classes) > 10 else ''}.")
        split_data, total = load_folder(folder, pre, classes, limit=limit, seed=config.get("seed", 0), check=check)
        n = len(split_data)
        measured = (f"every image in {folder} ({total:,})" if n == total
                    else f"a seeded sample of {n:,} of the {total:,} images in {folder}")
        return model, pre, split_data, measured, chosen[-1]
    split_data = load_split(data, split, pre, val_fraction=config.get("val_fraction", 0.1),
                            test_fraction=config.get("test_fraction", 0.0) if same_data else 0.0,
                            seed=config.get("seed", 0), limit=limit, check=check)
    if list(split_data.classes) != classes:
        raise ValueError(
            f"The data's classes ({', '.join(split_data.classes[:5])}…) are not the ones this checkpoint "
            f"was trained on ({', '.join(classes[:5])}…).")
    return model, pre, split_data, f"the {split} split of {describe_data(data)}", chosen[-1]
