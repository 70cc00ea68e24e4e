"""Fixtures shared by the tests (tests/unit, tests/app, tests/e2e): where ../shared/data is, skips that CI turns into
failures, the tiny trained checkpoint, and the live app. Shared assertions and utilities are in tests/helpers.py."""

import os
from pathlib import Path

import pytest

from tests.helpers import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ALEXNET_STUDIO_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        skip_or_fail(f"{path} is absent (the shared data sets live in ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    return _shared("cifar10")


@pytest.fixture(scope="session")
def flowers_dir() -> Path:
    return _shared("flowers5")


TINY_CLASSES = ["red", "green", "blue"]  # ImageFolder sorts them: blue, green, red


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny trained checkpoint for the whole session (prediction in the library, the app and the CLI):
    alexnet_cifar_small, two short epochs on generated 32x32 colour classes, a few seconds on one core.

    Returns (best.safetensors, the data folder with train/ and val/). Tests only read them.
    """
    from alexnet_core.config import TrainConfig
    from alexnet_core.train import train
    from tests.helpers import make_image_folder

    root = tmp_path_factory.mktemp("tiny")
    folder = make_image_folder(root / "data", TINY_CLASSES, n_per_class=24, size=32, splits=("train", "val"))
    config = TrainConfig(model="alexnet_cifar_small", data=str(folder), epochs=2, batch_size=16, lr=0.02,
                         optimizer="sgd", schedule="onecycle", device="cpu", out=str(root / "run"), half=True)
    end = train(config)
    assert end.status == "finished" and end.best_path, end.message
    return Path(end.best_path), folder


@pytest.fixture(scope="session")
def live_app(tmp_path_factory):
    """The real app, served on a free local port for the whole session (browser and API-client tests).

    Everything it writes goes under a temporary folder; a tiny generated ImageFolder data set ("tiny", two
    classes of coloured squares) is already in its uploads folder, so a training run can start at once.
    Yields an object with ``url``, ``home`` (its data folder) and ``tiny_data`` (that data set's path).
    """
    import socket
    import types

    from tests.helpers import make_image_folder

    home = tmp_path_factory.mktemp("studio-home")
    with pytest.MonkeyPatch.context() as mp:
        import gradio_app
        import ui.settings

        mp.setattr(ui.settings, "RUNS_DIR", home / "runs")
        mp.setattr(ui.settings, "UPLOADS_DIR", home / "uploads")
        mp.setattr(ui.settings, "VISITORS_DIR", home / "visitors")
        tiny = make_image_folder(home / "uploads" / "tiny", classes=["red", "green"], n_per_class=12, size=40)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # Served as `python gradio_app.py` serves it: the same queue, concurrency and upload limit.
        app = gradio_app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", home=home, tiny_data=tiny, app=app)
        finally:
            app.close()
