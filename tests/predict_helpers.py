"""A tiny trained checkpoint for the prediction tests (test_predict, test_app_predict, test_cli_predict)."""

from __future__ import annotations

from pathlib import Path

from alexnet_core.config import TrainConfig
from alexnet_core.train import train
from tests.helpers import make_image_folder

CLASSES = ["red", "green", "blue"]  # ImageFolder sorts them: blue, green, red


def train_tiny_checkpoint(root: Path) -> tuple[Path, Path]:
    """Trains alexnet_cifar_small for two short epochs on generated 32x32 colour classes.

    Returns (best.safetensors, the data folder with train/ and val/). Takes a few seconds on one core.
    """
    folder = make_image_folder(root / "data", CLASSES, n_per_class=24, size=32, splits=("train", "val"))
    config = TrainConfig(model="alexnet_cifar_small", data=str(folder), epochs=2, batch_size=16, lr=0.02,
                         optimizer="sgd", schedule="onecycle", device="cpu", out=str(root / "run"), half=True)
    end = train(config)
    assert end.status == "finished" and end.best_path, end.message
    return Path(end.best_path), folder
