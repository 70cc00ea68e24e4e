"""How long the Inside view takes to answer: the app's explain handler, per model, on this machine.

    python -m bench.explain_latency [--repeats 10] [--json]

Times `ui.inside.explain_photo` (decode, preprocess, the forward pass with every conv layer's activations,
Grad-CAM's backward pass, the filter grid, the activation grids and the overlay, i.e. everything the Inside tab
shows) for each shipped checkpoint and for the paper's 227x227 AlexNet with random weights (the largest net
the tab offers). The photo is one of the app's example photos. The first call of each model (loading it) is
not counted; the goal is under 2 s a request on this CPU. Reports the median and the 95th percentile in ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import ui.choices
import ui.inside
import ui.photos
import ui.settings
from alexnet_core.devices import describe_device, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    photos = ui.photos.example_photos()
    if not photos:
        sys.exit("No example photo found (examples/ or ../shared/data).")
    photo = photos[0][0]
    choices = [str(p) for p in sorted(ui.settings.SHIPPED_DIR.glob("*.safetensors"))]
    choices.append(ui.choices.UNTRAINED + "alexnet")
    results = {}
    for choice in choices:
        top, *_, info = ui.inside.explain_photo(photo, choice)  # loads the model; not counted
        if top is None:
            sys.exit(f"{choice}: {info}")
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ui.inside.explain_photo(photo, choice)
            times.append(1000 * (time.perf_counter() - start))
        times.sort()
        name = Path(choice).stem if not choice.startswith(ui.choices.UNTRAINED) else choice
        results[name] = {"median_ms": round(statistics.median(times), 1),
                         "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1)}
    report = {"explain_ms": results, "photo": photo, "repeats": args.repeats,
              "device": describe_device(resolve_device("auto"))}
    if args.json:
        print(json.dumps(report))
    else:
        for name, r in results.items():
            print(f"{name:>20}: median {r['median_ms']} ms, p95 {r['p95_ms']} ms")


if __name__ == "__main__":
    main()
