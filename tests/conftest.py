"""Fixtures shared by the tests: where ../shared/data is, and skips that CI turns into failures."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ALEXNET_STUDIO_SHARED_DATA", REPO.parent / "shared" / "data"))


def skip_or_fail(reason: str) -> None:
    """Skips with ``reason``; under CI (ALEXNET_STUDIO_REQUIRE=1) fails instead, so nothing is silently skipped."""
    if os.environ.get("ALEXNET_STUDIO_REQUIRE") == "1":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


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


@pytest.fixture(scope="session")
def live_app(tmp_path_factory):
    """The real app, served on a free local port for the whole session (browser and API-client tests).

    Everything it writes goes under a temporary folder; a tiny generated ImageFolder data set ("tiny", two
    classes of coloured squares) is already in its uploads folder, so a training run can start at once.
    Yields an object with ``url``, ``home`` (its data folder) and ``tiny_data`` (that data set's path).
    """
    import socket
    import types

    from helpers import make_image_folder

    home = tmp_path_factory.mktemp("studio-home")
    with pytest.MonkeyPatch.context() as mp:
        import gradio_app

        mp.setattr(gradio_app, "RUNS_DIR", home / "runs")
        mp.setattr(gradio_app, "UPLOADS_DIR", home / "uploads")
        mp.setattr(gradio_app, "VISITORS_DIR", home / "visitors")
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
