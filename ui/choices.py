"""The lists a visitor picks from, the same in every tab: data sets, checkpoints and models.

Each visitor sees the shipped checkpoints and data sets, and their own runs and uploads, never another
visitor's. A handler checks that what it was sent is in the sender's list (``listed_checkpoint``): an API client
can send any string, which the page's dropdowns would not.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from alexnet_core import imagenet
from alexnet_core.checkpoints import CheckpointInfo, list_checkpoints
from alexnet_core.models import MODELS
from alexnet_core.predict import get_predictor
from alexnet_core.runner import LOCAL
from alexnet_core.uploads import dataset_root

from . import settings
from .messages import markdown_text
from .visitors import owner_of, uploads_dir, visitor_folder

# Single photos are fastest on the CPU: a GPU's transfers and launches cost more than a small net's forward pass.
PREDICT_DEVICE = "cpu"

BUILTIN_DATA = [("CIFAR-10 (downloaded on first use)", "cifar10"),
                ("Fashion-MNIST (downloaded on first use)", "fashion-mnist"),
                ("Flowers, 5 classes (downloaded on first use)", "flowers")]


# A setting whose default is the variant's own (BatchNorm) is a choice of three, as the command line's
# --batch-norm, --no-batch-norm or neither: the values a field (and the API) takes, and what they mean.
OWN, ON, OFF = "own", "on", "off"


def switch_choices(own_label: str = "the model's own") -> list[tuple[str, str]]:
    return [(own_label, OWN), (ON, ON), (OFF, OFF)]


def switch_value(choice: str | bool | None) -> bool | None:
    """A three-way field's value as the setting takes it (None: the variant's own); a bool passes as it is."""
    return {OWN: None, ON: True, OFF: False}.get(choice, choice) if isinstance(choice, str) else choice


def data_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """Built-in data sets, the shared folders where present, the server's own data sets (folders in
    settings.UPLOADS_DIR) and the visitor's uploads: each visitor sees their own uploads, nobody else's."""
    choices = list(BUILTIN_DATA)
    for name in ("cifar10", "flowers5"):
        if (settings.SHARED_DATA / name).is_dir():
            choices.append((f"Shared folder: {name}", str(settings.SHARED_DATA / name)))
    folders = [settings.UPLOADS_DIR] + ([uploads_dir(owner)] if owner != LOCAL else [])
    for uploads in folders:
        if uploads.is_dir():
            for folder in sorted(p for p in uploads.iterdir() if p.is_dir()):
                choices.append((f"Uploaded: {folder.name}", str(dataset_root(folder))))
    return choices


def default_data(choices: list[tuple[str, str]]) -> str:
    """The data a form starts with: the shared CIFAR-10 folder where it is listed (no download), else CIFAR-10."""
    shared_cifar = str(settings.SHARED_DATA / "cifar10")
    return shared_cifar if shared_cifar in dict(choices).values() else "cifar10"


NO_CHECKPOINT = ("⚠️ There is no checkpoint yet: train one in the Train tab (it appears here when it "
                 "finishes), or put one in checkpoints/.")


def checkpoint_infos(owner: str = LOCAL) -> list[CheckpointInfo]:
    """Every checkpoint this visitor may use: the shipped ones first; then, on a private server, the runs in
    runs/ (this app's and ./runs); then the visitor's own runs and uploaded checkpoints. On a Space, nobody sees
    another visitor's runs."""
    dirs = [settings.SHIPPED_DIR]
    if not settings.ON_SPACE:
        dirs += [Path.cwd() / "runs", settings.RUNS_DIR]
    folder = visitor_folder(owner)
    if folder is not None:
        dirs += [folder / "runs", folder / "checkpoints"]
    found = list_checkpoints(*dirs)
    found.sort(key=lambda info: not info.path.resolve().is_relative_to(settings.SHIPPED_DIR.resolve()))  # stable
    return found


def checkpoint_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """(label, path) of every checkpoint this visitor may use (``checkpoint_infos``), for a dropdown."""
    return [(info.name, str(info.path)) for info in checkpoint_infos(owner)]


def default_checkpoint() -> str | None:
    """The CIFAR-10 checkpoint where it is shipped, else the first one listed, else None."""
    if settings.DEFAULT_CHECKPOINT.is_file():
        return str(settings.DEFAULT_CHECKPOINT)
    choices = checkpoint_choices()
    return choices[0][1] if choices else None


# torchvision's ImageNet AlexNet, offered in Predict and Inside beside the checkpoints (downloaded on first use).
IMAGENET = "imagenet:alexnet_torchvision"
IMAGENET_LABEL = (f"ImageNet · 1,000 classes · {imagenet.TOP1}% top-1 · torchvision's AlexNet "
                  f"({imagenet.DOWNLOAD_MB} MB, downloaded on first use)")


def model_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """Predict's and Inside's list: the visitor's checkpoints, then the ImageNet AlexNet."""
    return checkpoint_choices(owner) + [(IMAGENET_LABEL, IMAGENET)]


def load_predictor(choice: str):
    """The Predictor for a checkpoint path or for IMAGENET (whose first use downloads its weights)."""
    if choice == IMAGENET:
        return imagenet.imagenet_predictor(PREDICT_DEVICE)
    return get_predictor(choice, PREDICT_DEVICE)


def knows_line(classes: list[str], shown: int = 12) -> str:
    """What a model can answer, in one line: every class it knows (the first few of a long list), and that any
    other photo still gets one of them."""
    names = ", ".join(markdown_text(name) for name in classes[:shown])
    names += f", … and {len(classes) - shown:,} more" if len(classes) > shown else ""
    return f"**Knows {len(classes):,} classes:** {names}; any other photo gets the nearest of them."


def refreshed(choices: list[tuple[str, str]], current: str | None) -> gr.Dropdown:
    """A checkpoint list as it is now (a run may have finished), keeping the selection where it still exists."""
    return gr.Dropdown(choices=choices, value=current if current in dict(choices).values() else default_checkpoint())


NOT_LISTED = ("That checkpoint is not in the list of choices: pick one from the Checkpoint list (your runs and "
              "uploaded checkpoints are there), or upload it in the Predict tab.")


def listed_checkpoint(checkpoint: str | None, owner: str, choices: list[tuple[str, str]] | None = None) -> str | None:
    """The checkpoint to use: the one asked for if this visitor's list has it (checked here, not by the dropdown,
    so that a run that ended since the page loaded can be used at once), else the default; gr.Error otherwise.
    A direct call from Python (LOCAL) may name any file, as the command line may."""
    if not checkpoint:
        return default_checkpoint()
    listed = choices if choices is not None else checkpoint_choices(owner)
    if owner != LOCAL and checkpoint not in {path for _, path in listed}:
        raise gr.Error(NOT_LISTED)
    return checkpoint


UNTRAINED = "untrained:"  # choice values: a checkpoint's path, IMAGENET, or "untrained:<variant>"


def inside_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """Inside's list: the visitor's checkpoints, the ImageNet AlexNet, then every variant with random weights (to
    compare with what training learnt)."""
    return model_choices(owner) + [(f"untrained {name} (random weights)", UNTRAINED + name) for name in MODELS]


def refresh_predict_choices(current: str | None, visitor: str | None = None, request: gr.Request = None
                            ) -> gr.Dropdown:
    """Predict's list: the visitor's checkpoints and the ImageNet AlexNet."""
    return refreshed(model_choices(owner_of(visitor, request)), current)


def refresh_checkpoints(current: str | None, visitor: str | None = None, request: gr.Request = None) -> gr.Dropdown:
    """Evaluate's list: the visitor's checkpoints."""
    return refreshed(checkpoint_choices(owner_of(visitor, request)), current)


def refresh_inside_choices(current: str | None, visitor: str | None = None, request: gr.Request = None
                           ) -> gr.Dropdown:
    """Inside's list: the visitor's checkpoints, the ImageNet AlexNet and the untrained variants."""
    return refreshed(inside_choices(owner_of(visitor, request)), current)


def visitor_lists(visitor: str | None, request: gr.Request = None):
    """The lists a visitor sees, on page load: data sets with their uploads (Train, Evaluate), checkpoints with
    their runs and uploaded checkpoints (Predict, Evaluate, Inside). Choices only: the selections stay as they
    are, since a visitor may have picked an example (and with it a checkpoint) before this answer came."""
    owner = owner_of(visitor, request)
    data = data_choices(owner)
    return (gr.Dropdown(choices=data), gr.Dropdown(choices=data), gr.Dropdown(choices=model_choices(owner)),
            gr.Dropdown(choices=checkpoint_choices(owner)), gr.Dropdown(choices=inside_choices(owner)))
