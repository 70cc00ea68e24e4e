"""The real app in a real browser: Playwright drives Debian's Chromium (no browser download).

One page serves the whole module, in the order a visitor would go: Architecture, Train, Predict, Inside.
Where Chromium or Playwright is missing these skip with the reason (CI, with ALEXNET_STUDIO_REQUIRE=1, fails).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import skip_or_fail
from helpers import class_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("ALEXNET_STUDIO_CHROMIUM", "/usr/bin/chromium")
# Headless, and nothing that reaches for the network or a GPU.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TABS = ("Architecture", "Train", "Predict", "Evaluate", "Inside")
# Generous: on a busy 2-core machine a first model load or Grad-CAM can take several seconds.
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def page(live_app):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        page.goto(live_app.url)
        page.get_by_text("Layers at 224").first.wait_for()
        yield page
        browser.close()


def _tab(page, label: str):
    """Selects a tab and returns its panel (the one visible tab panel)."""
    page.get_by_role("tab", name=label, exact=True).click()
    return page.locator("[role=tabpanel]:visible").first


def _choose(panel, label: str, option) -> None:
    """Picks ``option`` (a name or a pattern) in the dropdown labelled ``label``."""
    panel.get_by_label(label, exact=True).click()
    panel.page.get_by_role("option", name=option).first.click()


@pytest.fixture()
def photo(tmp_path) -> Path:
    import numpy as np

    path = tmp_path / "photo.png"
    class_image(0, 64, np.random.default_rng(0)).save(path)
    return path


def test_every_tab_is_reachable_by_its_own_label(page):
    # Regression: a stray component under gr.Tabs once made the fifth tab button show "Evaluate" too.
    for label in (*TABS, "Architecture"):
        page.get_by_role("tab", name=label, exact=True).click()
        assert page.get_by_role("tab", name=label, exact=True).get_attribute("aria-selected") == "true"
    names = [t.inner_text().strip() for t in page.get_by_role("tab").all()]
    assert names == list(TABS)


def _shows(page, *texts: str) -> None:
    """Waits until the page holds every text (table cells scrolled out of view count: they are in the DOM)."""
    page.wait_for_function("(texts) => texts.every(t => document.body.innerText.includes(t) || "
                           "document.body.textContent.includes(t))", arg=list(texts))


def test_architecture_shows_the_shapes_at_224_and_at_32(page):
    panel = _tab(page, "Architecture")
    # The default variant is torchvision's AlexNet: conv1 (11x11, stride 4, padding 2) gives 55x55 at 224;
    # at 32 its pool5 would shrink below 1x1, and the tab says so instead of showing a table.
    _shows(page, "Layers at 224", "[1, 64, 55, 55]", "(224 − 11 + 2·2) / 4 + 1 = 55.25 → 55",
           "alexnet_torchvision cannot take 32x32 inputs: pool5's output shrinks below 1x1")
    # The CIFAR-10 net that keeps resolution: 3x3 convs, 32x32 all the way to pool1.
    _choose(panel, "Model", re.compile(r"^alexnet_cifar_hires —"))
    _shows(page, "Layers at 32", "[1, 64, 32, 32]", "(32 − 3 + 2·1) / 1 + 1 = 32")


def test_training_plots_live_and_stops_on_stop(page, live_app):
    panel = _tab(page, "Train")
    _choose(panel, "Data", "Uploaded: tiny")
    epochs = panel.get_by_label("Epochs", exact=True)
    epochs.fill("200")
    panel.get_by_label("Batch size", exact=True).fill("8")
    epochs.press("Tab")
    panel.get_by_role("button", name="Start", exact=True).click()
    # Live: the step counter moves and the loss plot draws, while the run goes on.
    page.get_by_text(re.compile(r"Step [\d,]+ / [\d,]+")).first.wait_for()
    panel.locator(".vega-embed").first.wait_for()  # Gradio draws LinePlots with Vega
    first = page.get_by_text(re.compile(r"Step [\d,]+ / [\d,]+")).first.inner_text()
    page.wait_for_function(
        "(t) => [...document.querySelectorAll('p')].some(p => /Step [\\d,]+ \\//.test(p.textContent) "
        "&& p.textContent !== t)", arg=first)
    assert panel.locator(".vega-embed").count() >= 1
    panel.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile(r"^Stopped", re.M)).first.wait_for()
    assert list(live_app.home.glob("visitors/*/runs/*/best.safetensors"))  # the visitor's own runs folder


def test_predict_shows_top_k_for_an_uploaded_photo(page, cifar10_dir):
    panel = _tab(page, "Predict")
    panel.locator("input[type=file]").first.set_input_files(str(cifar10_dir / "test" / "cat" / "0001.jpg"))
    panel.get_by_text(" ms on ").first.wait_for()  # the inference time line comes with the answer
    text = panel.inner_text()
    # gr.Label: the top class as a heading, then k=5 classes with their probabilities.
    top = re.search(r"Top classes\n(\w+)\n((?:\w+\n\d+%\n?){5})", text)
    assert top, text[:600]
    rows = re.findall(r"(\w+)\n(\d+)%", top.group(2))
    assert top.group(1) == rows[0][0] == "cat", rows
    probabilities = [int(p) for _, p in rows]
    assert probabilities == sorted(probabilities, reverse=True) and 50 <= sum(probabilities) <= 101


def test_inside_renders_gradcam_filters_and_feature_maps(page, photo):
    panel = _tab(page, "Inside")
    panel.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_text(re.compile(r"Grad-CAM explains")).first.wait_for()
    images = page.locator("[role=tabpanel]:visible img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=tabpanel] img')].filter(i => i.offsetParent && "
        "i.naturalWidth >= 64).length >= 3")
    assert images.count() >= 3
