"""Screenshots of the app's tabs for the README: the real app in headless Chromium, driven by Playwright.

    python -m docs.take_screenshots [--out docs/screenshots]

Uses Debian's /usr/bin/chromium (no browser download). Starts the app as a fresh clone has it (no ../shared/data,
its own empty data folder) on a free local port and shows it doing its job, at a desktop's size (1400x1000) and a
phone's (390x844), light and dark: Predict answering an example photo with the shipped checkpoint, the
Architecture tab's two tables and its all-columns tables, Inside on a photo its checkpoint knows, Evaluate on a
few flower photos, the Train tab mid-run (a tiny generated data set) with both curves and the network live, and
Compare on the two shipped checkpoints. One file per tab, size and scheme: ``<tab>-<desktop|phone>-<light|dark>.png``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIZES = {"desktop": (1400, 1000), "phone": (390, 844)}
SCHEMES = ("light", "dark")
FLOWERS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_sample(target: Path, per_class: int = 6) -> None:
    """A small flowers data set (val/<class>/…) to evaluate on: photos of ../shared/data/flowers5 where it is
    there, else the example photos that travel with the app."""
    shared = REPO.parent / "shared" / "data" / "flowers5" / "val"
    for name in FLOWERS:
        folder = target / "val" / name
        folder.mkdir(parents=True, exist_ok=True)
        photos = sorted((shared / name).glob("*"))[:per_class] if (shared / name).is_dir() else \
            sorted((REPO / "examples").glob(f"flowers5-{name}-*"))
        for photo in photos:
            shutil.copy(photo, folder / photo.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="screenshots-"))

    from playwright.sync_api import sync_playwright

    # As a fresh clone or a Space sees it: no ../shared/data, nothing trained yet; a tiny generated data set (three
    # classes of coloured squares, as the tests use) is uploaded so that the Train tab can show a run, and a few
    # flower photos so that Evaluate can.
    import gradio_app
    import ui.settings

    ui.settings.SHARED_DATA = home / "no-shared-data"
    ui.settings.RUNS_DIR, ui.settings.UPLOADS_DIR = home / "runs", home / "uploads"
    from tests.helpers import make_image_folder

    make_image_folder(home / "uploads" / "squares", classes=["red", "green", "blue"], n_per_class=60, size=32)
    flower_sample(home / "uploads" / "flowers-sample")
    port = free_port()
    app = gradio_app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        # One visitor throughout (one browser context): their run shows at every size and in both schemes.
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        for _ in range(120):
            try:
                page.goto(url)
                break
            except Exception:
                time.sleep(0.5)
        page.get_by_text("Examples: click one").first.wait_for()

        def tab(label: str):
            """Selects a tab, from the tab bar or, where a narrow screen hides it, from the "…" menu."""
            button = page.get_by_role("tab", name=label, exact=True)
            if button.is_visible():
                button.click()
            else:
                page.get_by_role("button", name="More tabs").click()
                page.locator(".overflow-dropdown button", has_text=label).click()
            page.wait_for_timeout(1000)
            return page.locator("[role=tabpanel]:visible").first

        def choose(panel, label: str, option: str) -> None:
            panel.get_by_label(label, exact=True).click()
            page.get_by_role("option", name=option).first.click()

        # Train mid-run, started once: the run goes on while every other screenshot is taken.
        panel = tab("Train")
        choose(panel, "Data", "Uploaded: squares")
        panel.get_by_label("Epochs", exact=True).fill("200")
        panel.get_by_label("Batch size", exact=True).fill("16")
        panel.get_by_label("Epochs", exact=True).press("Tab")
        panel.get_by_role("button", name="Start", exact=True).click()
        page.get_by_text("Best validation accuracy").first.wait_for()

        for size, (width, height) in SIZES.items():
            for scheme in SCHEMES:
                def shot(name: str, suffix: str = f"{size}-{scheme}") -> None:
                    page.wait_for_timeout(2000)
                    page.screenshot(path=str(out / f"{name}-{suffix}.png"), full_page=True)

                page.set_viewport_size({"width": width, "height": height})
                page.emulate_media(color_scheme=scheme)
                page.goto(f"{url}?__theme={scheme}")  # the same visitor: the page follows their run
                page.get_by_text("Examples: click one").first.wait_for()

                # Predict, the first screen: a flower example, answered by the flowers checkpoint it selects.
                page.locator("img[src*='flowers5-sunflowers']").first.click()
                page.wait_for_function("() => (document.querySelector('.output-class') || {}).innerText === "
                                       "'sunflowers' && document.querySelectorAll('[aria-roledescription=bar]')"
                                       ".length >= 5")
                shot("predict")

                # Architecture: torchvision's AlexNet at 224 beside the CIFAR-10 net at 32, and all the columns.
                panel = tab("Architecture")
                panel.locator("table.layers").nth(1).wait_for()
                panel.get_by_text("This variant at 224 and at 32 (all columns)").click()
                panel.get_by_text("Layers at 224").first.wait_for()
                shot("architecture")

                # Inside: a photo its checkpoint knows (the flowers net on a daisy).
                panel = tab("Inside")
                panel.locator("img[src*='flowers5-daisy']").first.click()
                panel.get_by_text("Grad-CAM explains").first.wait_for()
                page.wait_for_function("() => [...document.querySelectorAll('[role=tabpanel] img')].filter(i => "
                                       "i.offsetParent && i.naturalWidth >= 64).length >= 4")
                shot("inside")

                # Evaluate: the flowers checkpoint on a few flower photos.
                panel = tab("Evaluate")
                choose(panel, "Checkpoint", "flowers")
                choose(panel, "Data", "Uploaded: flowers-sample")
                panel.get_by_label("val", exact=True).check()
                panel.get_by_role("button", name="Evaluate", exact=True).click()
                panel.get_by_text("% correct").first.wait_for()
                panel.locator(".mpl-figure img").first.wait_for()
                shot("evaluate")

                # Train mid-run: both curves drawn, the network live (filters, guesses, feature maps), still going.
                panel = tab("Train")
                page.wait_for_function("() => [...document.querySelectorAll('[role=tabpanel] .vega-embed')]"
                                       ".filter(v => v.querySelector('g.mark-line path')).length >= 2",
                                       timeout=180_000)
                page.locator("#live-guesses img").first.wait_for()
                shot("train")

                # Compare: the two shipped checkpoints (the list's first two, chosen at the start), one line each.
                panel = tab("Compare")
                panel.get_by_role("button", name="Compare", exact=True).click()
                page.locator("#compare-chart img").first.wait_for()
                shot("compare")
        # The run is stopped from its own tab (the last panel shown is Compare's), unless it has finished already.
        panel = tab("Train")
        stop = panel.get_by_role("button", name="Stop", exact=True)
        if stop.is_enabled():
            stop.click()
        page.get_by_text(re.compile("^(Stopped|Finished)", re.M)).first.wait_for()
        browser.close()
    app.close()
    print("\n".join(str(p) for p in sorted(out.glob("*.png"))))


if __name__ == "__main__":
    main()
