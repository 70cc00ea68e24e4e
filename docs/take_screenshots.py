"""Screenshots of the app's tabs for the README: the real app in headless Chromium, driven by Playwright.

    python -m docs.take_screenshots [--out docs/screenshots]

Uses Debian's /usr/bin/chromium (no browser download). Starts the app as a fresh clone has it (no ../shared/data,
its own empty data folder) on a free local port and shows it doing its job: Predict answering an example photo
with the shipped checkpoint, the Architecture tab's two tables, Inside on a photo its checkpoint knows, and the
Train tab mid-run (a tiny generated data set) with both curves.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="screenshots-"))

    from playwright.sync_api import sync_playwright

    # As a fresh clone or a Space sees it: no ../shared/data, nothing trained yet; a tiny generated data set (two
    # classes of coloured squares, as the tests use) is uploaded so that the Train tab can show a run.
    import gradio_app
    import ui.settings

    ui.settings.SHARED_DATA = home / "no-shared-data"
    ui.settings.RUNS_DIR, ui.settings.UPLOADS_DIR = home / "runs", home / "uploads"
    from tests.helpers import make_image_folder

    make_image_folder(home / "uploads" / "squares", classes=["red", "green", "blue"], n_per_class=60, size=32)
    port = free_port()
    app = gradio_app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        for _ in range(120):
            try:
                page.goto(url)
                break
            except Exception:
                time.sleep(0.5)
        page.get_by_text("Examples: click one").first.wait_for()

        def shot(name: str) -> None:
            page.wait_for_timeout(2000)
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)

        def tab(label: str):
            page.get_by_role("tab", name=label, exact=True).click()
            page.wait_for_timeout(1000)
            return page.locator("[role=tabpanel]:visible").first

        # Predict, the first screen: a flower example, answered by the flowers checkpoint it selects.
        page.locator("img[src*='flowers5-sunflowers']").first.click()
        page.wait_for_function("() => (document.querySelector('.output-class') || {}).innerText === 'sunflowers'")
        shot("predict")

        # Architecture: the paper's AlexNet beside its CIFAR-10 adaptation.
        panel = tab("Architecture")
        panel.locator("table.layers").nth(1).wait_for()
        shot("architecture")

        # Inside: a photo its checkpoint knows (the flowers net on a daisy).
        panel = tab("Inside")
        panel.locator("img[src*='flowers5-daisy']").first.click()
        page.get_by_text("Grad-CAM explains").first.wait_for()
        page.wait_for_function("() => [...document.querySelectorAll('[role=tabpanel] img')].filter(i => "
                               "i.offsetParent && i.naturalWidth >= 64).length >= 4")
        shot("inside")

        # Train mid-run: both curves drawn, the run still going.
        panel = tab("Train")
        panel.get_by_label("Data", exact=True).click()
        page.get_by_role("option", name="Uploaded: squares").first.click()
        panel.get_by_label("Epochs", exact=True).fill("60")
        panel.get_by_label("Batch size", exact=True).fill("16")
        panel.get_by_label("Epochs", exact=True).press("Tab")
        panel.get_by_role("button", name="Start", exact=True).click()
        page.get_by_text("Best validation accuracy").first.wait_for()
        page.wait_for_function("() => document.body.innerText.match(/epoch (\\d+) \\//) && "
                               "+document.body.innerText.match(/epoch (\\d+) \\//)[1] >= 5")
        # both charts with their curves drawn (Vega re-renders on every poll; wait for a frame with the lines)
        page.wait_for_function("() => [...document.querySelectorAll('[role=tabpanel] .vega-embed')].filter(v => "
                               "v.querySelector('[aria-roledescription=\"line mark\"], path.mark-line, "
                               "g.mark-line path')).length >= 2", timeout=90_000)
        shot("train")
        panel.get_by_role("button", name="Stop", exact=True).click()
        page.get_by_text("Stopped").first.wait_for()
        browser.close()
    app.close()
    print("\n".join(str(p) for p in sorted(out.glob("*.png"))))


if __name__ == "__main__":
    main()
