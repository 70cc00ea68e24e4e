"""The real AlexNet: torchvision's ImageNet weights (``AlexNet_Weights.IMAGENET1K_V1``) in our alexnet_torchvision.

The weights (233 MB) are downloaded on first use into torch's hub folder ($TORCH_HOME, which the app sets under
$ALEXNET_STUDIO_HOME) and read from there afterwards. Everything else comes from the weights' own description:
the 1,000 class names from ``meta["categories"]`` and the preprocessing (resize 256, centre crop 224, ImageNet's
mean and std) from ``weights.transforms()``. Where the machine cannot reach the internet, ``imagenet_predictor``
raises ``ImageNetUnavailable`` with one sentence; nothing else in AlexNet Studio needs the download.
"""

from __future__ import annotations

import threading

import torch

from .checkpoints import CheckpointError, model_meta
from .models import build_model
from .predict import Predictor
from .transforms import Preprocess

MODEL = "alexnet_torchvision"  # torchvision.models.alexnet, layer for layer, with our layer names
WEIGHTS = "IMAGENET1K_V1"
DOWNLOAD_MB = 233
TOP1 = 56.5  # % on ImageNet's validation set: weights.meta["_metrics"], rounded (tests/app/test_imagenet.py checks)


class ImageNetUnavailable(CheckpointError):
    """The ImageNet weights are not on this machine and cannot be downloaded; the message is one sentence."""


def _weights():
    from torchvision.models import AlexNet_Weights  # torchvision's model zoo: only when asked for

    return AlexNet_Weights[WEIGHTS]


def _download_state_dict(weights) -> dict[str, torch.Tensor]:
    """torchvision's state dict, downloaded with a progress bar (tqdm, which gr.Progress(track_tqdm) shows)
    the first time and read from torch's hub folder afterwards. Tests replace this function."""
    return weights.get_state_dict(progress=True, check_hash=True)


def is_downloaded() -> bool:
    """Whether the weights are already in torch's hub folder (no download on the next use)."""
    from pathlib import Path

    weights = _weights()
    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name).is_file()


def preprocess(weights) -> Preprocess:
    """Our Preprocess from torchvision's ImageClassification transform: decode_image resizes the shorter side to
    ``resize_size`` and keeps the centre square, eval_transform crops ``crop_size`` from its centre."""
    transform = weights.transforms()
    return Preprocess(input_size=transform.crop_size[0], store_size=transform.resize_size[0], in_channels=3,
                           mean=tuple(transform.mean), std=tuple(transform.std))


def _as_ours(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """torchvision's keys (features.0, classifier.1, …) renamed to ours (features.conv1, classifier.fc6, …).

    Both nets hold the same parameters in the same order (conv1–conv5, then fc6–fc8, each weight then bias), so the
    i-th tensor of one is the i-th of the other; every shape is checked."""
    ours = model.state_dict()
    if len(ours) != len(state_dict):
        raise CheckpointError(f"torchvision's AlexNet weights hold {len(state_dict)} tensors, not the {len(ours)} "
                              f"of {MODEL}.")
    renamed = {}
    for (key, expected), (their_key, tensor) in zip(ours.items(), state_dict.items()):
        if tensor.shape != expected.shape:
            raise CheckpointError(f"torchvision's {their_key} is {list(tensor.shape)}, but {MODEL}'s {key} is "
                                  f"{list(expected.shape)}.")
        renamed[key] = tensor.float()
    return renamed


_lock = threading.Lock()
_predictor: Predictor | None = None


def _downloaded(weights) -> dict[str, torch.Tensor]:
    """torchvision's state dict, or ImageNetUnavailable with one sentence where it cannot be had."""
    try:
        return _download_state_dict(weights)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a broken download fails the hash check
        raise ImageNetUnavailable(
            f"The ImageNet AlexNet needs a {DOWNLOAD_MB} MB download from download.pytorch.org on first use, "
            f"and this machine cannot get it ({type(error).__name__}): pick a shipped checkpoint, or use it "
            f"where the internet is.") from error


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet weights under our layer names (a run that starts from them: transfer.py), downloaded the first
    time (ImageNetUnavailable where they cannot be)."""
    with _lock:
        if _predictor is not None:
            return {k: v.detach().cpu().clone() for k, v in _predictor.model.state_dict().items()}
    model = build_model(MODEL, num_classes=1000, in_channels=3, batch_norm=False)
    return _as_ours(_downloaded(_weights()), model)


def imagenet_predictor(device: str | torch.device = "cpu") -> Predictor:
    """The ImageNet AlexNet, downloaded the first time (ImageNetUnavailable where it cannot be), then kept."""
    global _predictor
    with _lock:  # two first requests download once
        if _predictor is not None and _predictor.device == torch.device(device):
            return _predictor
        weights = _weights()
        state_dict = _downloaded(weights)
        classes = list(weights.meta["categories"])
        model = build_model(MODEL, num_classes=len(classes), in_channels=3, batch_norm=False)
        model.load_state_dict(_as_ours(state_dict, model), strict=True)
        pre = preprocess(weights)
        meta = model_meta(MODEL, batch_norm=False, num_classes=len(classes), in_channels=3, classes=classes,
                          preprocess=pre.to_dict(), data="ImageNet",
                          source=f"torchvision AlexNet_Weights.{WEIGHTS} "
                                 f"({weights.meta['_metrics']['ImageNet-1K']['acc@1']}% top-1 on ImageNet's "
                                 f"validation set)")
        predictor = Predictor(model, classes, pre, meta, device)
        predictor.warm_up()
        _predictor = predictor
        return predictor
