"""One prediction, one answer (issue 25): on a fresh app started as a Space, what Predict shows after a click
(the label, the bar chart, the info line and "What the network sees") comes from one computation, on one photo
with one checkpoint, however fast the example photos are clicked.

An example click sets both the photo and the checkpoint, so two prediction events overlap; the chart and the
network's view once came from a follow-up event that read a shared gr.State which ever event finished last wrote.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, REPO, skip_or_fail, space_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 90_000
CLICKS = 20
FLOWERS = sorted(p.name for p in (REPO / "examples").glob("flowers5-*"))
CIFAR = sorted(p.name for p in (REPO / "examples").glob("cifar10-*"))
CHECKPOINTS = {"flowers5-": REPO / "checkpoints" / "flowers.safetensors",
               "cifar10-": REPO / "checkpoints" / "cifar10.safetensors"}


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    with space_app(tmp_path_factory.mktemp("space-home")) as (url, _):
        yield url


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


def _expected(photo: str) -> dict:
    """What one computation gives for an example photo with the checkpoint its click selects: the model, the
    classes ranked, and the network's view of the photo (pixels)."""
    from alexnet_core.predict import get_predictor, network_view

    checkpoint = next(path for prefix, path in CHECKPOINTS.items() if photo.startswith(prefix))
    predictor = get_predictor(checkpoint, "cpu")
    prediction = predictor.predict(str(REPO / "examples" / photo), top_k=5)
    ranked = sorted(prediction.probabilities, key=prediction.probabilities.get, reverse=True)
    return {"model": predictor.meta["model"], "classes": set(predictor.classes), "top": ranked[0],
            "view": network_view(prediction, predictor.pre)}


# What the page shows, read in one go: the label's top class, the chart's bars (Vega's SVG describes each bar
# in its aria-label: "class: daisy; probability: 0.87"), the info line and the network's view (its image URL).
READ_PAGE = """() => {
    const panel = document.querySelector('[role=tabpanel]:not([hidden])');
    const label = panel.querySelector('.output-class');
    const bars = [...panel.querySelectorAll('.vega-embed [aria-roledescription=bar]')]
        .map(b => b.getAttribute('aria-label'));
    const info = document.querySelector('#predict-info');
    const viewBox = [...panel.querySelectorAll('.block')].find(b => b.innerText.startsWith('What the network sees'));
    const view = viewBox && viewBox.querySelector('img');
    const busy = panel.querySelectorAll('.pending, .generating, .eta-bar').length;
    return {label: label ? label.innerText.trim() : null, bars, info: info ? info.innerText : '',
            view: view ? view.src : null, busy};
}"""


def _settled(page, timeout_s: float = 90) -> dict:
    """The page once nothing is pending and what it shows has not changed for 1.5 s."""
    import time

    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        now = page.evaluate(READ_PAGE)
        if now != last or now["busy"]:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.5 and now["label"] and now["bars"] and now["view"]:
            return now
        page.wait_for_timeout(100)
    raise AssertionError(f"Predict did not settle in {timeout_s} s: {last}")


def _bars(labels: list[str]) -> list[tuple[str, float]]:
    bars = []
    for text in labels:
        fields = dict(part.split(": ", 1) for part in text.split("; "))
        bars.append((fields["class"], float(fields["probability"])))
    return bars


def _problems(page, shown: dict, photo: str, expected: dict) -> list[str]:
    from PIL import Image, ImageChops

    problems = []
    if shown["label"] != expected["top"]:
        problems.append(f"label says {shown['label']!r}, the photo's answer is {expected['top']!r}")
    bars = _bars(shown["bars"])
    if not {name for name, _ in bars} <= expected["classes"]:
        problems.append(f"chart's classes {sorted(name for name, _ in bars)} are not the checkpoint's")
    elif max(bars, key=lambda bar: bar[1])[0] != expected["top"]:
        problems.append(f"chart's top class is {max(bars, key=lambda bar: bar[1])[0]!r}, not {expected['top']!r}")
    if expected["model"] not in shown["info"]:
        problems.append(f"info line names another checkpoint: {shown['info'][:160]!r}")
    response = page.request.get(shown["view"])
    with Image.open(io.BytesIO(response.body())) as view:
        view = view.convert("RGB")
        if view.size != expected["view"].size or ImageChops.difference(view, expected["view"]).getbbox():
            problems.append(f"'What the network sees' ({view.size}) is not this photo through this checkpoint")
    return [f"{photo}: {problem}" for problem in problems]


def test_twenty_quick_example_clicks_each_end_with_one_whole_answer(space, browser):
    assert FLOWERS and CIFAR, "examples/ holds flower and CIFAR-10 photos"
    photos = [FLOWERS[i // 2 % len(FLOWERS)] if i % 2 == 0 else CIFAR[i // 2 % len(CIFAR)] for i in range(CLICKS)]
    expected = {photo: _expected(photo) for photo in set(photos)}
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(space)
        page.get_by_text("Examples: click one").first.wait_for()
        problems = []
        for photo in photos:  # each click as soon as the page has settled on the one before
            page.locator(f"img[src*='{Path(photo).stem}']").first.click()
            problems += _problems(page, _settled(page), photo, expected[photo])
        assert problems == [], f"{len(problems)} mixed answers after {CLICKS} clicks:\n" + "\n".join(problems)
    finally:
        context.close()
