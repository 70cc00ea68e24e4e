"""Issue 24, item 2: every piece of work pays for its memory before it starts — evaluation, prediction and
Grad-CAM as training already does — and the decoded-image cache has a bound, is shared and is cleaned."""

from __future__ import annotations

import pytest

from alexnet_core import data, memory
from alexnet_core.evaluate import evaluate_checkpoint
from alexnet_core.explain import explain
from alexnet_core.predict import Predictor
from alexnet_core.transforms import Preprocess
from tests.helpers import REPO, assert_one_sentence, make_image_folder

SHIPPED = REPO / "checkpoints" / "cifar10.safetensors"
PHOTO = next(p for p in (REPO / "examples").iterdir() if p.suffix == ".jpg")


def test_the_decoded_cache_is_bounded_shared_and_cleaned(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "data", 2, n_per_class=20, size=32, splits=None)
    pre = Preprocess(32, 32, 3, (0.5,) * 3, (0.25,) * 3)
    cache = tmp_path / "cache"
    one_image = 3 * 32 * 32
    monkeypatch.setenv(data.CACHE_LIMIT_ENV, str(25 * one_image / 10**6))   # room for about 25 images
    for limit in (10, 11, 12, 10, 13):   # four different samples, and the first one again
        data.load_folder(folder, pre, ["class0", "class1"], limit=limit, cache_dir=cache)
        files = list(cache.glob("images-*"))
        assert sum(f.stat().st_size for f in files) <= 25 * one_image + 4096 * len(files), files
    # The same images again use the same file (shared, not written anew) …
    before = {f.name for f in cache.glob("images-*")}
    data.load_folder(folder, pre, ["class0", "class1"], limit=13, cache_dir=cache)
    assert {f.name for f in cache.glob("images-*")} == before
    # … and a split larger than half the bound is decoded without being cached at all.
    split, _ = data.load_folder(folder, pre, ["class0", "class1"], limit=40, cache_dir=cache)
    assert len(split) == 40 and {f.name for f in cache.glob("images-*")} <= before


def test_evaluation_takes_a_smaller_batch_or_says_how_many_images_fit(monkeypatch):
    pre = Preprocess(32, 2048, 3, (0.5,) * 3, (0.25,) * 3)
    ask = dict(batch_norm=True, num_classes=10, held=True, views=1, decoding=40, in_flight=5, batch_size=256)
    monkeypatch.setenv(memory.BUDGET_ENV, "1G")
    with pytest.raises(memory.MemoryRefusal) as refused:
        memory.evaluation_batch("alexnet_cifar_fast", pre, images=40, **ask)
    assert_one_sentence(refused, "40 images stored at 2048x2048", "1.0 GiB", "at most", "images fit")
    fit = int(str(refused.value).split("at most ")[1].split()[0])
    assert 1 <= memory.evaluation_batch("alexnet_cifar_fast", pre, images=fit, **(ask | {"decoding": fit}))
    monkeypatch.setenv(memory.BUDGET_ENV, "64G")
    assert memory.evaluation_batch("alexnet_cifar_fast", pre, images=40, **ask) == 40


def test_evaluate_refuses_before_decoding_when_the_images_do_not_fit(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "data", ["airplane", "automobile"], n_per_class=30, size=32, splits=None)
    monkeypatch.setenv(memory.BUDGET_ENV, "1M")
    decoded = []
    monkeypatch.setattr(data, "_decode_all", lambda *args: decoded.append(args))
    with pytest.raises(memory.MemoryRefusal) as refused:
        evaluate_checkpoint(SHIPPED, str(folder))
    assert_one_sentence(refused, "Evaluating alexnet_cifar_fast on 60 images")
    assert decoded == []


def test_prediction_and_grad_cam_pay_for_their_memory_before_decoding(monkeypatch):
    predictor = Predictor.from_checkpoint(SHIPPED)
    assert predictor.predict(PHOTO, tta="ten-crop").top_k
    monkeypatch.setenv(memory.BUDGET_ENV, "1K")
    with pytest.raises(memory.MemoryRefusal) as refused:
        predictor.predict(PHOTO, tta="ten-crop")
    assert_one_sentence(refused, "Predicting with ten-crop", "fewer test-time views")
    with pytest.raises(memory.MemoryRefusal) as refused:
        explain(predictor.model, predictor.meta, PHOTO)
    assert_one_sentence(refused, "Grad-CAM")
