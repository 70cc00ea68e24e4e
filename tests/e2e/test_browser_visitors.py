"""Strangers sharing one Space: a fresh app started as a Space starts it (SPACE_ID set, `python gradio_app.py`),
and two visitors in two browser contexts (two browsers, as far as the app can tell), with Debian's Chromium.

What issue 18 asked to see: B neither sees nor stops A's run and is told plainly that theirs waits; A's run
ends; A's loss plot is a line chart with a numeric y axis from the first moment on a fresh server; a page with no
run of its own going sends no requests; a checkpoint trained in one browser downloads, and predicts in the other.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, class_image, make_image_folder, skip_or_fail, space_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WAIT_MS = 90_000
STEP = re.compile(r"Step [\d,]+ / [\d,]+")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """`python gradio_app.py` as a Space runs it, on a free port, with an empty home but for a tiny data set of
    the server's own (two classes of coloured squares). The epoch cap is lifted so that a run lasts while the
    other visitor looks; everything else is the Space's defaults."""
    home = tmp_path_factory.mktemp("space-home")
    make_image_folder(home / "uploads" / "tiny", classes=["red", "green"], n_per_class=12, size=40)
    with space_app(home, ALEXNET_STUDIO_MAX_EPOCHS="1000") as (url, log_path):
        yield url, home, log_path


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _visit(browser, url: str):
    """A new visitor: a browser context of their own (own localStorage, so their own visitor id)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.get_by_text("Layers at 224").first.wait_for()
    return page


def _tab(page, label: str):
    page.get_by_role("tab", name=label, exact=True).click()
    return page.locator("[role=tabpanel]:visible").first


def _status(panel) -> str:
    return panel.locator("p", has_text=re.compile(r"^(No run|\*\*|Running|Finished|Stopped|Stopping|Preparing|"
                                                  r"Failed|⏳|Started|No run of yours)")).first.inner_text()


def _wait_text(page, pattern: str) -> None:
    page.wait_for_function("(p) => new RegExp(p).test(document.querySelector('[role=tabpanel]:not([hidden])')"
                           "?.innerText || document.body.innerText)", arg=pattern)


def _choose(panel, label: str, option) -> None:
    panel.get_by_label(label, exact=True).click()
    panel.page.get_by_role("option", name=option).first.click()


def _start(panel, epochs: int, batch_size: int = 8) -> None:
    _choose(panel, "Data", "Uploaded: tiny")
    field = panel.get_by_label("Epochs", exact=True)
    field.fill(str(epochs))
    panel.get_by_label("Batch size", exact=True).fill(str(batch_size))
    field.press("Tab")
    panel.get_by_role("button", name="Start", exact=True).click()


def _loss_axis(panel) -> str:
    """The loss plot's y axis as Vega describes it (SVG renderer: aria-label on the axis group)."""
    plot = panel.locator(".vega-embed").first
    plot.locator("g.mark-line path").first.wait_for()  # a line is drawn
    # ... in a colour of the legend, which names both curves (Gradio's LinePlot keeps the curves of its first
    # data: an empty first frame left every line without a colour, and so invisible).
    legend = plot.locator("g[aria-label^='Symbol legend']").first.get_attribute("aria-label")
    assert "train (per step)" in legend and "validation" in legend, legend
    return plot.locator("g[aria-label^='Y-axis']").first.get_attribute("aria-label")


def _step(page) -> int:
    text = page.get_by_text(STEP).first.inner_text()
    return int(re.search(r"Step ([\d,]+)", text).group(1).replace(",", ""))


def test_two_visitors_share_a_space_each_with_their_own_run(space, browser, tmp_path):
    url, home, log_path = space
    a = _visit(browser, url)          # the first visitor of a fresh server
    panel_a = _tab(a, "Train")
    a.get_by_text("No run yet").first.wait_for()
    _start(panel_a, epochs=1000, batch_size=2)  # 12,000 steps: it goes on until A stops it
    a.get_by_text(STEP).first.wait_for()
    # Plots right from the first moment: a line, and a numeric (linear) y axis, not one category per loss value.
    axis = _loss_axis(panel_a)
    assert "titled 'loss'" in axis and "linear scale" in axis, axis

    # A reload reconnects to the run (the visitor's id lives in the browser).
    before = _step(a)
    a.reload()
    panel_a = _tab(a, "Train")
    a.get_by_text(STEP).first.wait_for()
    a.wait_for_function("(n) => { const m = document.body.innerText.match(/Step ([\\d,]+) \\//); "
                        "return m && +m[1].replace(/,/g, '') > n; }", arg=before)

    # B sees no run, cannot stop A's, and is told plainly that theirs waits, and where in line.
    b = _visit(browser, url)
    panel_b = _tab(b, "Train")
    b.get_by_text("No run yet").first.wait_for()
    time.sleep(2)
    assert b.get_by_text(STEP).count() == 0
    panel_b.get_by_role("button", name="Stop", exact=True).click()
    b.get_by_text("No run of yours is going.").first.wait_for()
    running = _step(a)
    a.wait_for_function("(n) => { const m = document.body.innerText.match(/Step ([\\d,]+) \\//); "
                        "return m && +m[1].replace(/,/g, '') > n; }", arg=running)  # A's run goes on
    _start(panel_b, epochs=2)
    # (Told so while B's Start waits in the queue; and, since A's reload let A's page go, the training event's
    # place may be free while A's run still trains: then B's event waits for it and says the same.)
    b.get_by_text(re.compile(r"Another visitor's run is training .* Yours is number 1 in line")).first.wait_for()
    assert b.get_by_text(STEP).count() == 0

    # A stops their run: it ends as Stopped, with its plot still a line on a numeric axis; B's run then starts
    # by itself and finishes.
    panel_a.get_by_role("button", name="Stop", exact=True).click()
    a.get_by_text(re.compile(r"^Stopped", re.M)).first.wait_for()
    axis = _loss_axis(panel_a)
    assert "linear scale" in axis, axis
    b.get_by_text(re.compile(r"^Finished", re.M)).first.wait_for()

    # A's checkpoint downloads; B uploads that file and predicts with it.
    with a.expect_download() as download:
        panel_a.get_by_role("button", name=re.compile("Download the best checkpoint")).click()
    saved = tmp_path / "a-best.safetensors"
    download.value.save_as(saved)
    assert saved.stat().st_size > 10_000 and saved.read_bytes()[8:9] == b"{"  # a safetensors header
    panel_b = _tab(b, "Predict")
    panel_b.get_by_text("Upload a checkpoint").first.click()
    panel_b.locator("input[type=file][accept*='.safetensors']").set_input_files(str(saved))
    b.get_by_text(re.compile(r"is now in your Checkpoint lists")).first.wait_for()
    photo = tmp_path / "photo.png"
    class_image(0, 40, np.random.default_rng(3)).save(photo)
    panel_b.locator("input[type=file]").first.set_input_files(str(photo))
    # The answer names the uploaded file, and the classes are the tiny data's (CIFAR-10's net knows neither).
    panel_b.get_by_text(re.compile(r"^\d{8}-\d{6}-a-best\.safetensors$")).first.wait_for()
    text = panel_b.inner_text()
    assert re.search(r"\bred\n\d+%", text) and re.search(r"\bgreen\n\d+%", text), text[:800]
    a.context.close()
    b.context.close()


def test_a_page_with_no_run_of_its_own_sends_no_requests(space, browser):
    """Counted for 10 s once the page has loaded (every tab's first requests done), with no run going."""
    url, _, _ = space
    page = _visit(browser, url)
    _tab(page, "Train").get_by_text("No run yet").first.wait_for()
    page.wait_for_timeout(5_000)  # (not "networkidle": Gradio's heartbeat stream never lets the network idle)
    sent = []
    page.on("request", lambda request: sent.append(request.url))
    page.wait_for_timeout(10_000)  # (not time.sleep: Playwright delivers the page's events while it waits)
    assert sent == [], sent
    page.context.close()
