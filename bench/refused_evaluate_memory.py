"""Peak memory of a Space-mode app (a child process) that refuses an evaluation too big for its memory (issue 24).

Starts `python gradio_app.py` as a Space starts it (tests/helpers.py's space_app), with ALEXNET_STUDIO_MEMORY_BUDGET
set, puts a checkpoint whose preprocessing stores images at 2048x2048 among one API client's checkpoints, and asks
/evaluate for it on the shared CIFAR-10 test split with each image count given. Prints the app's peak resident
memory (VmHWM) before and after each refused call, the sentence, and the decoded-cache files written.

    python bench/refused_evaluate_memory.py --budget 1G --images 80 150
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from tests.app.test_strangers import forged, peak_rss_bytes, visitor_checkpoints  # noqa: E402
from tests.helpers import REPO, client_owner, space_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="1G", help="ALEXNET_STUDIO_MEMORY_BUDGET of the app")
    parser.add_argument("--images", type=int, nargs="+", default=[80, 150])
    args = parser.parse_args()
    data = str(REPO.parent / "shared" / "data" / "cifar10")
    with tempfile.TemporaryDirectory() as folder, \
            space_app(Path(folder), ALEXNET_STUDIO_MEMORY_BUDGET=args.budget) as (url, _):
        home = Path(folder)
        client = Client(url, verbose=False)
        checkpoint = forged(visitor_checkpoints(home, client_owner(client)) / "huge-store.safetensors",
                            lambda meta: meta["preprocess"].update(store_size=2048))
        print(f"app started: peak RSS {peak_rss_bytes(home) / 2**20:,.0f} MiB (budget {args.budget})")
        for images in args.images:
            before, start = peak_rss_bytes(home), time.perf_counter()
            try:
                client.predict(str(checkpoint), data, "test", images, "none", api_name="/evaluate")
                answer = "evaluated (not refused)"
            except AppError as error:
                answer = f"refused: {error}"
            after = peak_rss_bytes(home)
            print(f"{images} images: {answer}\n  in {time.perf_counter() - start:.1f} s; peak RSS {before / 2**20:,.0f}"
                  f" → {after / 2**20:,.0f} MiB (+{(after - before) / 2**20:,.0f} MiB)")
        cache = home / "cache"
        print(f"decoded-cache files: {len(list(cache.glob('images-*'))) if cache.is_dir() else 0}")


if __name__ == "__main__":
    main()
