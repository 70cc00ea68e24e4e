"""The "Your own classes" tab's handler and the Train tab's start (issue 26), without a browser: what a page or an
API client sends is checked against the caller's own lists, and a refusal keeps nothing."""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest

import ui.settings
import ui.train
import ui.train_own_classes
from alexnet_core.config import ConfigError
from alexnet_core.own_classes import MAX_CLASSES, MIN_PHOTOS
from alexnet_core.runner import RUNNER
from tests.helpers import assert_one_sentence, make_image_folder


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setattr(ui.settings, "VISITORS_DIR", tmp_path / "visitors")
    monkeypatch.setattr(ui.settings, "UPLOADS_DIR", tmp_path / "uploads")
    monkeypatch.setattr(ui.settings, "RUNS_DIR", tmp_path / "runs")
    return tmp_path


def test_a_start_outside_the_callers_list_is_refused_before_it_is_read(home):
    data = make_image_folder(home / "uploads" / "tiny", ["a", "b"], n_per_class=6, size=32, splits=None)
    for start in ("/etc/passwd", str(home / "visitors" / "someone" / "runs" / "r" / "best.safetensors")):
        with pytest.raises(ConfigError) as refused:
            ui.train._start_run("visitor-a", {"data": str(data), "start_from": start, "epochs": 1})
        assert_one_sentence(refused, "start from", "your list")
    assert not RUNNER.snapshot("visitor-a").active


def _run(*values, visitor="0" * 32):
    async def drain():
        return [answer async for answer in ui.train_own_classes.train_own_classes(visitor, *values)]
    return asyncio.run(drain())


def test_the_tab_refuses_bad_classes_in_one_sentence_and_keeps_nothing(home):
    photos = sorted(str(p) for p in make_image_folder(home / "camera", ["x"], n_per_class=MIN_PHOTOS,
                                                      size=48, splits=None).rglob("*.png"))
    start = ui.train_own_classes.shipped_start()
    names = ["cat", "cat"] + [""] * (MAX_CLASSES - 2)
    files = [photos, photos] + [None] * (MAX_CLASSES - 2)
    with pytest.raises(gr.Error) as duplicate:
        _run(start, "classifier", *names, *files)
    assert_one_sentence(duplicate.value.message, "cat", "own name")
    with pytest.raises(gr.Error) as alone:
        _run(start, "classifier", "cat", *[""] * (MAX_CLASSES - 1), photos, *[None] * (MAX_CLASSES - 1))
    assert_one_sentence(alone.value.message, "two classes")
    with pytest.raises(gr.Error) as elsewhere:
        _run("/etc/passwd", "classifier", *names, *files)
    assert_one_sentence(elsewhere.value.message, "start")
    assert not list((home / "visitors").rglob("*.jpg")) and not RUNNER.snapshot("0" * 32).active


def test_without_the_imagenet_weights_the_tab_says_so_and_offers_the_shipped_checkpoint(home, monkeypatch):
    import urllib.error

    from alexnet_core import imagenet

    def offline(weights):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(imagenet, "_predictor", None)
    monkeypatch.setattr(imagenet, "_download_state_dict", offline)
    answers = _run(ui.train_own_classes.IMAGENET, "classifier", *[""] * MAX_CLASSES, *[None] * MAX_CLASSES)
    status, *_ = answers[-1]
    start = answers[-1][ui.train_own_classes.OUTPUTS.index("start")]
    assert_one_sentence(status.lstrip("⚠️ "), "ImageNet AlexNet", "shipped checkpoint")
    assert start["value"] == ui.train_own_classes.shipped_start() and start["value"].endswith("cifar10.safetensors")
    assert not list((home / "visitors").rglob("*")) and not RUNNER.snapshot("0" * 32).active
