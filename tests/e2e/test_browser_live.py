"""Watching a run learn, in a real browser on a fresh Space-mode app (issue 27): a visitor uploads a zip and
trains on it; while it trains, conv1's filters and the guesses change between two validations; after it ends,
the timeline shows the first and the last snapshot; the Compare tab overlays two runs with a legend naming both;
another visitor sees none of it."""

from __future__ import annotations

import re
import shutil
import zipfile

import pytest

from tests.e2e.test_browser_visitors import _choose, _tab, _visit, browser  # noqa: F401  (browser: a fixture)
from tests.helpers import make_image_folder, space_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EPOCH = re.compile(r"\*?\*?epoch (\d+)\b")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    home = tmp_path_factory.mktemp("live-home")
    with space_app(home, ALEXNET_STUDIO_MAX_EPOCHS="1000") as (url, log_path):
        yield url, home


@pytest.fixture(scope="module")
def colours_zip(tmp_path_factory):
    """An ImageFolder zip of three colours, 40 squares each: enough for validations a second or so apart."""
    root = tmp_path_factory.mktemp("colours")
    make_image_folder(root / "colours", classes=["red", "green", "blue"], n_per_class=40, size=32)
    archive = root / "colours.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((root / "colours").rglob("*.png")):
            z.write(path, path.relative_to(root))
    return archive


def _caption(page) -> str:
    return page.locator("#live-caption").inner_text()


def _src(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} img").first.get_attribute("src") or ""


def _validated_epoch(page) -> int:
    """The epoch of the snapshot the live view shows, once it is a validation's (0 before that)."""
    text = _caption(page)
    found = EPOCH.search(text)
    return int(found.group(1)) if found and "mid-epoch" not in text else 0


def test_a_visitor_watches_their_run_learn_then_looks_back_and_compares(space, browser, colours_zip):  # noqa: F811
    url, home = space
    page = _visit(browser, url)
    panel = _tab(page, "Train")
    panel.get_by_text("Upload an ImageFolder zip").first.click()
    panel.locator("input[type=file][accept*='.zip']").set_input_files(str(colours_zip))
    page.get_by_text(re.compile(r"Unpacked 3 classes")).first.wait_for()
    page.locator("#live-caption").get_by_text("appear here when a run starts").wait_for()
    field = panel.get_by_label("Epochs", exact=True)
    field.fill("400")                     # long enough to watch; Stop ends it
    panel.get_by_label("Batch size", exact=True).fill("8")
    field.press("Tab")
    panel.get_by_role("button", name="Start", exact=True).click()

    # Two validations while it trains: the filters and the guesses change between them.
    page.wait_for_function("() => /epoch [1-9]/.test(document.querySelector('#live-caption').innerText)"
                           " && !/mid-epoch/.test(document.querySelector('#live-caption').innerText)")
    first = _validated_epoch(page)
    filters, guesses = _src(page, "live-filters"), _src(page, "live-guesses")
    assert first >= 1 and filters and guesses
    page.wait_for_function(f"() => {{ const m = document.querySelector('#live-caption').innerText"
                           f".match(/epoch (\\d+)/); return m && +m[1] >= {first + 2}; }}")
    assert _validated_epoch(page) > first
    assert _src(page, "live-filters") != filters
    assert _src(page, "live-guesses") != guesses
    assert page.locator("#live-filters img").first.is_visible() and page.get_by_text("Running").count() >= 1

    panel.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile(r"^Stopped", re.M)).first.wait_for()
    page.wait_for_function("() => !document.querySelector('#live-gif').disabled")   # the GIF, once it has ended

    # The timeline: the first snapshot (the random start) and the last (the stop).
    timeline = page.locator("#live-timeline input[type=number]")
    last = int(timeline.get_attribute("max"))
    assert last >= 3
    timeline.fill("1")
    timeline.press("Tab")
    page.locator("#live-caption").get_by_text(re.compile(f"Snapshot 1 of {last}")).wait_for()
    assert "the start" in _caption(page)
    timeline.fill(str(last))
    timeline.press("Tab")
    page.locator("#live-caption").get_by_text(re.compile(f"Snapshot {last} of {last}")).wait_for()
    with page.expect_download() as download:
        page.locator("#live-gif").click()
    assert download.value.suggested_filename.endswith("-filters.gif")

    # Compare: this run and the shipped CIFAR-10 checkpoint ("CIFAR-10 · 10 classes · …") on one chart, and the
    # table naming both.
    compare = _tab(page, "Compare")
    compare.get_by_text(re.compile(r"^colours")).first.wait_for()
    for label in page.locator("#compare-runs label:has(input)").all():
        name = label.inner_text().strip()
        checked = label.locator("input").is_checked()
        if checked != (name.startswith("colours") or name.startswith("CIFAR-10")):
            label.click()
    compare.get_by_role("button", name="Compare", exact=True).click()
    page.locator("#compare-chart img").first.wait_for()          # the chart (its legend: test_train_live.py)
    page.wait_for_function("() => { const t = document.querySelector('#compare-table')?.innerText || '';"
                           " return /colours/.test(t) && /CIFAR-10/.test(t); }")     # one row per run

    # Another visitor sees none of it.
    other = _visit(browser, url)
    _tab(other, "Train")
    other.locator("#live-caption").get_by_text("appear here when a run starts").wait_for()
    assert not other.locator("#live-filters img").count()
    other_compare = _tab(other, "Compare")
    assert other_compare.get_by_text(re.compile(r"^colours")).count() == 0
    page.context.close()
    other.context.close()
    shutil.rmtree(home / "visitors", ignore_errors=True)
