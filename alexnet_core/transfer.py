"""Starting a run from a trained network (transfer learning): ``--start-from`` and ``--retrain``.

A run starts from random weights (no ``start_from``), from torchvision's ImageNet AlexNet (``imagenet``), or from
a checkpoint (a shipped one, or a run of one's own). The start decides the model: its variant, BatchNorm and
input size. Every layer is copied from it but the last, which is made new for the run's classes. Then:

* ``retrain="classifier"``: the convolutional layers (``model.features``) are frozen and each training image's
  features are computed once per run, with its mirrored copy (``FeatureData``); an epoch trains only
  ``model.classifier`` (fc6, fc7 and a new fc8) on them. Why all three and not the last layer alone: a linear probe
  on the frozen *convolutional* features of the shipped CIFAR-10 net scored 48% on other flower photos at 20 per
  class, its last hidden layer's (fc7's) only 34%: the fully connected layers are the most specific to the
  classes they were trained for, the conv features the most general. fc6 and fc7 start from the trained weights
  and adapt; the conv layers, which hold nearly all the computation, stay as they are. Cropping, PCA lighting and
  cutout are not applied (the features are fixed); mirroring is.
* ``retrain="all"``: every layer trains, the copied ones at ``PRETRAINED_LR_FACTOR`` of the learning rate (they
  are already good; a full rate would wash out what they know), the new last layer at the full rate.

The checkpoint records where the run started (``provenance``), and the model card says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoints
from .config import ConfigError
from .transforms import Preprocess, eval_transform

IMAGENET = "imagenet"
RETRAIN = ("all", "classifier")
PRETRAINED_LR_FACTOR = 0.1
FEATURE_BATCH = 64  # images per forward pass when the features are computed


@dataclass(frozen=True)
class Start:
    """What a run starts from, read from its metadata alone (nothing downloaded or loaded yet)."""

    name: str               # "imagenet", or the checkpoint's file name
    path: str | None        # the checkpoint; None for the ImageNet weights
    model: str
    batch_norm: bool
    in_channels: int
    input_size: int
    provenance: dict        # the start's own story: its weights, data, classes and what it started from


def describe_start(start_from: str) -> Start:
    """The start ``start_from`` names ("imagenet" or a checkpoint path); ConfigError with one sentence when
    there is none or it cannot be read."""
    if start_from == IMAGENET:
        from . import imagenet

        return Start(IMAGENET, None, imagenet.MODEL, False, 3, 224, {
            "name": "torchvision's ImageNet AlexNet", "weights": f"torchvision AlexNet_Weights.{imagenet.WEIGHTS}",
            "data": "ImageNet (1,000 classes, 1.28 M images)", "top1": imagenet.TOP1})
    path = Path(str(start_from))
    if not path.is_file():
        raise ConfigError(f"There is no checkpoint {path.name} to start from: name imagenet or a .safetensors "
                          f"checkpoint (a shipped one or a run's best.safetensors).")
    try:
        meta = checkpoints.read_metadata(path)
    except checkpoints.CheckpointError as error:
        raise ConfigError(f"{path.name} cannot be a start: {error}") from None
    name = checkpoint_label(path)
    provenance = {"name": name, "model": meta["model"], "data": meta.get("data"), "classes": meta["classes"],
                  "best_val_acc": meta.get("best_val_acc"), "created": meta.get("created")}
    if isinstance(meta.get("started_from"), dict):
        provenance["started_from"] = meta["started_from"]   # a start that itself started from another
    return Start(name, str(path), meta["model"], meta["batch_norm"], meta["in_channels"],
                 meta["preprocess"]["input_size"], provenance)


def checkpoint_label(path: str | Path) -> str:
    """A checkpoint as provenance names it: a run's best.safetensors by its run folder, else its file name."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.name == "best.safetensors" else path.name


def start_settings(start_from: str) -> dict:
    """The settings a start decides: its model, BatchNorm and input size."""
    start = describe_start(start_from)
    return {"model": start.model, "batch_norm": start.batch_norm, "input_size": start.input_size}


def start_weights(start: Start) -> dict[str, torch.Tensor]:
    """The start's weights under our layer names (the ImageNet ones downloaded on first use, where there is
    internet; ImageNetUnavailable with one sentence where not)."""
    if start.path is None:
        from . import imagenet

        return imagenet.imagenet_state_dict()
    try:
        return checkpoints.load_user_weights(start.path)
    except checkpoints.CheckpointError as error:
        raise ConfigError(f"{start.name} cannot be a start: {error}") from None


def last_layer(model: nn.Module) -> str:
    """The name of the model's last layer ("classifier.fc8"): the one a run makes new for its classes."""
    name = [n for n, m in model.classifier.named_children() if isinstance(m, nn.Linear)][-1]
    return f"classifier.{name}"


def load_start(model: nn.Module, start: Start, model_name: str) -> set[str]:
    """Copies every layer of the start but the last into ``model``; ConfigError with one sentence when its layers
    do not fit the model. Returns the names of the copied parameters (the pretrained ones)."""
    head = last_layer(model) + "."
    weights = {k: v for k, v in start_weights(start).items() if not k.startswith(head)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(head)}
    problem = checkpoints._fit_problem(weights, expected, model_name)
    if problem:
        raise ConfigError(f"{start.name} cannot start a {model_name} run: {problem}; start from a checkpoint of "
                          f"{model_name}, or leave the model out and the start decides it.")
    model.load_state_dict(weights, strict=False)
    return {name for name, _ in model.named_parameters() if not name.startswith(head)}


def provenance(start: Start, retrain: str) -> dict:
    """What the checkpoint records about the start."""
    return {**start.provenance, "start_from": start.path or IMAGENET, "retrain": retrain}


def describe_provenance(started_from: dict | None) -> str:
    """One line for a card or a page: where a run started and what it retrained."""
    if not isinstance(started_from, dict):
        return "random weights (trained from scratch)"
    name = str(started_from.get("name", "?"))
    what = [f"{started_from['weights']}" if started_from.get("weights") else None,
            f"trained on {started_from['data']}" if started_from.get("data") else None,
            f"{len(started_from['classes'])} classes" if isinstance(started_from.get("classes"), list) else None,
            f"best validation accuracy {started_from['best_val_acc']:.1%}"
            if isinstance(started_from.get("best_val_acc"), (int, float)) else None]
    inner = started_from.get("started_from")
    if isinstance(inner, dict):
        what.append(f"itself started from {inner.get('name', '?')}")
    retrain = {"classifier": "the classifier only (its fully connected layers; the conv layers frozen)",
               "all": f"every layer (the pretrained ones at {PRETRAINED_LR_FACTOR:g}× the learning rate)"}.get(
        started_from.get("retrain"), "?")
    return f"{name} ({'; '.join(w for w in what if w)}); retrained {retrain}"


def freeze_features(model: nn.Module) -> None:
    """The convolutional layers frozen: no gradients, and BatchNorm's statistics kept as they are."""
    for parameter in model.features.parameters():
        parameter.requires_grad_(False)
    model.features.eval()


class FeatureData:
    """The training images' features, computed once: [N, 2, D] (each image and its mirror) and labels; batches
    as ``ImageData.batches`` gives them, so that the loop takes either."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, classes: list[str], seconds: float):
        self.features, self.labels, self.classes, self.seconds = features, labels, classes, seconds

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False):
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        order = order.to(self.features.device)
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size]
            yield self.features[index], self.labels[index]


@torch.no_grad()
def compute_features(model: nn.Module, images: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """The classifier's input for each uint8 image and its mirror: [N, 2, D]."""
    model.features.eval()
    out = []
    for start in range(0, len(images), FEATURE_BATCH):
        batch = eval_transform(images[start:start + FEATURE_BATCH], pre)
        views = torch.cat([batch, batch.flip(-1)])
        flat = torch.flatten(model.avgpool(model.features(views)), 1)
        out.append(torch.stack(flat.chunk(2), 1))
    return torch.cat(out)


def cache_features(model: nn.Module, train_data, pre: Preprocess) -> FeatureData:
    """Every training image's features (and its mirror's), computed once for the run."""
    began = time.perf_counter()
    features = compute_features(model, train_data.images, pre)
    return FeatureData(features, train_data.labels, train_data.classes, time.perf_counter() - began)


def pick_views(features: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Each image's features or its mirror's, at random (the random flip, on cached features): [B, 2, D] → [B, D]."""
    mirrored = torch.rand(len(features), generator=generator, device=features.device) < 0.5
    return features[torch.arange(len(features), device=features.device), mirrored.long()]
