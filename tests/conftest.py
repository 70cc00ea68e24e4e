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
