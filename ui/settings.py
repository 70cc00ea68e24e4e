"""Where the app keeps things, and what a shared server allows: read once from the environment.

The app's modules read these as ``settings.NAME`` when they run, so that a test (or a script) can move a folder
or change a cap by setting the attribute here.
"""

from __future__ import annotations

import os
from pathlib import Path

from alexnet_core.caps import SharingLimits, TrainingCaps
from alexnet_core.data import default_home
from alexnet_core.runner import RUNNER

# Everything the app writes (downloads, decoded caches, uploads, training runs, torchvision's weights and
# Gradio's own upload folder) goes under one folder, $ALEXNET_STUDIO_HOME. Set before gradio is imported,
# which reads GRADIO_TEMP_DIR once; an explicit setting of either variable wins.
STUDIO_HOME = default_home()
os.environ.setdefault("GRADIO_TEMP_DIR", str(STUDIO_HOME / "gradio"))
os.environ.setdefault("TORCH_HOME", str(STUDIO_HOME / "torch"))

REPO = Path(__file__).resolve().parent.parent
# The data sets that sit beside the repo on the development machines (see ../shared/data/README.md); the tests'
# variable moves it (a path that does not exist gives the app as a fresh clone or a Space has it).
SHARED_DATA = Path(os.environ.get("ALEXNET_STUDIO_SHARED_DATA", REPO.parent / "shared" / "data"))
RUNS_DIR = STUDIO_HOME / "runs"        # the server's own runs (a direct call from Python, the command line's)
UPLOADS_DIR = STUDIO_HOME / "uploads"  # the server's own data sets
VISITORS_DIR = STUDIO_HOME / "visitors"  # each visitor's runs, uploads and checkpoints, in a folder of their own
SHIPPED_DIR = REPO / "checkpoints"
# What /predict uses when the caller names no checkpoint.
DEFAULT_CHECKPOINT = SHIPPED_DIR / "cifar10.safetensors"
# The photos that travel with the app (credited in examples/README.md).
EXAMPLES_DIR = REPO / "examples"

# A Hugging Face Space sets SPACE_ID: the server is public, and strangers share it.
ON_SPACE = bool(os.environ.get("SPACE_ID"))
TRAINING_CAPS = TrainingCaps.from_env()
SHARING = SharingLimits.from_env()
RUNNER.max_active = SHARING.runs_at_once

# How many requests of one event may run at once. Predict and Inside answer in milliseconds to a second on a
# CPU, so a few at a time keep a 2-vCPU Space responsive; the queue holds the rest in order.
CONCURRENCY = int(os.environ.get("ALEXNET_STUDIO_CONCURRENCY", "2"))
# Uploads (photos, zipped data sets) larger than this are refused by Gradio before any of our code runs.
MAX_UPLOAD = os.environ.get("ALEXNET_STUDIO_MAX_UPLOAD", "200mb")
# Gradio's own upload folder (uploads, downloads handed out) is cleaned of files this old, every as many seconds.
CACHE_SECONDS = int(os.environ.get("ALEXNET_STUDIO_CACHE_SECONDS", "3600"))


def max_upload_bytes() -> int:
    """MAX_UPLOAD in bytes (Gradio's cap on each uploaded file)."""
    from alexnet_core.memory import parse_bytes

    return parse_bytes(MAX_UPLOAD)
