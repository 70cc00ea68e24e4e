"""Screenshots of the app's tabs for the README: the real app in headless Chromium, driven by Playwright.

    python -m docs.take_screenshots [--out docs/screenshots]

Uses Debian's /usr/bin/chromium (no browser download). Starts the app on a free local port, visits each
tab, and for Predict uploads an example photo first, so the pictures show the app doing its job.
"""

from __future__ import annotations

import argparse
import socket
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

    from playwright.sync_api import sync_playwright

    import gradio_app

    port = free_port()
    app = gradio_app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        for _ in range(120):
            try:
                page.goto(url)
                break
            except Exception:
                time.sleep(0.5)
        page.get_by_text("Layers at 224").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "architecture.png"), full_page=True)

        for tab in ("Train", "Predict", "Evaluate", "Inside"):
            page.get_by_role("tab", name=tab, exact=True).click()
            page.wait_for_timeout(1500)
            panel = page.locator("[role=tabpanel]:visible")
            if tab in ("Predict", "Inside"):
                examples = gradio_app._example_photos()
                if examples:
                    panel.locator("input[type=file]").first.set_input_files(examples[0][0])
                    done = "Grad-CAM explains" if tab == "Inside" else " ms"
                    panel.get_by_text(done).first.wait_for(timeout=120_000)
                    page.wait_for_timeout(3000)
            if tab == "Evaluate":
                panel.get_by_role("button", name="Evaluate", exact=True).click()
                panel.get_by_text("correct").first.wait_for(timeout=180_000)
                page.wait_for_timeout(3000)
            page.screenshot(path=str(out / f"{tab.lower()}.png"), full_page=True)
        browser.close()
    app.close()
    print("\n".join(str(p) for p in sorted(out.glob("*.png"))))


if __name__ == "__main__":
    main()
