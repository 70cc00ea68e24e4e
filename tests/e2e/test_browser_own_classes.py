"""Your own classes in a browser (issue 26), on a fresh app started as a Space starts it, with Debian's Chromium:
a visitor makes three classes from photos in the page, trains from a shipped checkpoint with the classifier only,
sees per-class accuracy, then classifies a photo with the new model in Predict; another visitor sees none of it.

With ALEXNET_STUDIO_SCREENSHOTS=DIR the class builder and the finished run are saved there at 1400 px and on a
phone (390x844): ``ALEXNET_STUDIO_SCREENSHOTS=docs/screenshots pytest tests/e2e/test_browser_own_classes.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_browser_visitors import _choose, _tab, _visit, browser  # noqa: F401  (browser: a fixture)
from tests.helpers import class_image, space_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLASSES = ["mug", "plant", "lamp"]
PHOTOS_PER_CLASS = 8
PHONE = {"width": 390, "height": 844}


def _shots(page, name: str) -> None:
    """The page at 1400 px and on a phone, where asked for (ALEXNET_STUDIO_SCREENSHOTS)."""
    folder = os.environ.get("ALEXNET_STUDIO_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(500)
    page.screenshot(path=str(Path(folder) / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_a_visitor_trains_their_own_classes_and_predicts_with_them(tmp_path, browser):  # noqa: F811
    rng = np.random.default_rng(0)
    photos = {}
    for label, name in enumerate(CLASSES):
        photos[name] = []
        for i in range(PHOTOS_PER_CLASS):
            path = tmp_path / "camera-roll" / f"{name}-{i}.png"
            path.parent.mkdir(exist_ok=True)
            class_image(label, (160, 120), rng).save(path)
            photos[name].append(str(path))
    with space_app(tmp_path / "home") as (url, _):
        page = _visit(browser, url)
        panel = _tab(page, "Your own classes")
        for i, name in enumerate(CLASSES):
            page.locator(f"#own-name-{i} textarea, #own-name-{i} input").first.fill(name)
            page.locator(f"#own-photos-{i} input[type=file]").set_input_files(photos[name])
            # Uploaded: every photo's row has its download link (the server's copy). Rows are found by their cells'
            # labels, not their text: Gradio splits a name into stem and extension, and a narrow or scrolled list
            # may render them apart.
            page.wait_for_function(
                "([id, n]) => document.querySelectorAll(`#${id} td.filename + td a[data-testid=download-link]`)"
                ".length === n", arg=[f"own-photos-{i}", PHOTOS_PER_CLASS], timeout=180_000)
            assert page.locator(f'#own-photos-{i} td.filename[aria-label="{name}-0.png"]').count() == 1
        _choose(panel, "Start from", re.compile("CIFAR-10"))
        assert panel.get_by_label("the classifier only (fast)").is_checked()
        _shots(page, "own-classes")

        page.locator("#own-train").click()
        result = page.locator("#own-result")
        result.get_by_role("heading", name=re.compile("held-out photos right")).wait_for(timeout=240_000)
        text = result.inner_text()
        for name in CLASSES:
            assert re.search(rf"{name}\s+\d+\s+\d+\s+\d+/\d+\s+\d+%", text), text   # accuracy per class
        assert "cifar10.safetensors" in text and "the classifier only" in text
        _shots(page, "own-classes-finished")

        # Predict has the new model selected, named after its classes; a photo of a mug is classified by it.
        predict = _tab(page, "Predict")
        chosen = predict.get_by_label("Checkpoint", exact=True).input_value()
        assert "mug-plant-lamp" in chosen, chosen
        predict.locator("input[type=file]").first.set_input_files(photos["mug"][0])
        top = page.locator("#predict-info")
        top.get_by_text("Knows 3 classes").wait_for()
        assert "mug, plant, lamp" in top.inner_text() or "lamp, mug, plant" in top.inner_text()

        # Another visitor: none of it.
        other = _visit(browser, url)
        other_predict = _tab(other, "Predict")
        other_predict.get_by_label("Checkpoint", exact=True).click()
        options = " ".join(other.get_by_role("option").all_inner_texts())
        assert "mug" not in options and "CIFAR-10" in options
        other.keyboard.press("Escape")
        other_panel = _tab(other, "Your own classes")
        assert "photos right" not in other_panel.inner_text() and "mug" not in other_panel.inner_text()
        other.context.close()
        page.context.close()
