"""How long the app's /predict takes, set against Gradio's own floor, and the prediction pipeline alone.

    python -m bench.predict_latency [--repeats 50] [--checkpoint PATH ...] [--json]

Starts two Gradio servers in this process, each on a free local port:
- the floor: a trivial gr.Blocks whose one function takes a gr.Image and returns a fixed gr.Label;
- the app: gradio_app.build_app(), which loads and warms the shipped checkpoints at start.
Then, round after round, with the order shuffled in each round so that a slow spell of the machine hits every
measurement alike, it times:
- floor_ms: the trivial endpoint, called through gradio_client with the first checkpoint's photo;
- predict_ms: the app's /predict for each checkpoint, with tta "none" and "ten-crop", through gradio_client;
- pipeline_ms: Predictor.predict in this process (decode, preprocess, forward, softmax), same checkpoints and TTA.
Each endpoint call uploads the photo, as a real client does. The photo for a checkpoint is an example photo of one
of its classes (the app's examples: ../shared/data photos, or examples/ files named like cifar10-cat.png). The first
--warmup rounds are not counted.
Reports the median and the 95th percentile of each, in milliseconds.

Checkpoints default to the shipped ones (checkpoints/*.safetensors); any other must be one the app lists
(under ./runs or the app's runs folder), since /predict accepts only the checkpoints in its dropdown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import numpy as np
from gradio_client import Client, handle_file

import gradio_app
import ui.choices
import ui.photos
import ui.settings
from alexnet_core.devices import describe_device, resolve_device
from alexnet_core.predict import get_predictor

TTAS = ("none", "ten-crop")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def floor_app() -> gr.Blocks:
    """The least an image endpoint can do: take the upload and return a label."""
    with gr.Blocks() as app:
        image = gr.Image(type="pil")
        label = gr.Label()
        gr.Button().click(lambda picture: {"floor": 1.0}, inputs=image, outputs=label, api_name="predict")
    return app


def launch(app: gr.Blocks) -> Client:
    app.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return Client(app.local_url, verbose=False)


def photo_for(classes: list[str]) -> Path:
    """The example photo named after one of the checkpoint's classes, else the first example."""
    examples = [Path(row[0]) for row in ui.photos.example_photos()]
    if not examples:
        raise SystemExit(f"No example photos: put some in {ui.settings.EXAMPLES_DIR} or provide ../shared/data.")
    # An example photo of one of the checkpoint's classes: its class is its folder (../shared/data) or the
    # part of its name after the dash (examples/cifar10-cat.png).
    return next((p for p in examples if p.parent.name in classes or p.stem.split("-", 1)[-1] in classes),
                examples[0])


def listed_checkpoints(asked: list[str] | None) -> list[str]:
    """The dropdown values of the checkpoints to measure (the shipped ones by default)."""
    listed = {Path(path).resolve(): path for _, path in ui.choices.checkpoint_choices()}
    wanted = [Path(p) for p in asked] if asked else sorted(ui.settings.SHIPPED_DIR.glob("*.safetensors"))
    if not wanted:
        raise SystemExit("No checkpoints to measure: checkpoints/ is empty and no --checkpoint was given.")
    missing = [str(p) for p in wanted if p.resolve() not in listed]
    if missing:
        raise SystemExit(f"The app does not list {', '.join(missing)}: measure shipped checkpoints, or runs "
                         f"under ./runs or {ui.settings.RUNS_DIR}.")
    return [listed[p.resolve()] for p in wanted]


def summary(times: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(times)
    return {"median": round(float(np.median(ms)), 2), "p95": round(float(np.percentile(ms, 95)), 2)}


def measure(repeats: int, warmup: int, checkpoints: list[str], seed: int = 0) -> dict:
    app = gradio_app.build_app()
    app_client, floor = launch(app), floor_app()
    floor_client = launch(floor)
    try:
        calls: dict[tuple, Callable[[], object]] = {}
        names = {}
        for path in checkpoints:
            predictor = get_predictor(path, ui.choices.PREDICT_DEVICE)  # the app's own cached, warmed model
            photo = photo_for(predictor.classes)
            names[path] = Path(path).stem if Path(path).stem != "best" else Path(path).parent.name
            for tta in TTAS:
                calls[("predict", path, tta)] = (lambda photo=photo, path=path, tta=tta: app_client.predict(
                    handle_file(str(photo)), path, 5, tta, api_name="/predict"))
                calls[("pipeline", path, tta)] = (lambda photo=photo, p=predictor, tta=tta:
                                                  p.predict(photo, top_k=5, tta=tta))
        first_photo = photo_for(get_predictor(checkpoints[0], ui.choices.PREDICT_DEVICE).classes)
        calls[("floor",)] = lambda: floor_client.predict(handle_file(str(first_photo)), api_name="/predict")

        times: dict[tuple, list[float]] = {key: [] for key in calls}
        order, rng = list(calls), random.Random(seed)
        for round_ in range(warmup + repeats):
            rng.shuffle(order)
            for key in order:
                start = time.perf_counter()
                calls[key]()
                if round_ >= warmup:
                    times[key].append(time.perf_counter() - start)
    finally:
        app.close()
        floor.close()

    return {
        "floor_ms": summary(times[("floor",)]),
        "predict_ms": {names[p]: {tta: summary(times[("predict", p, tta)]) for tta in TTAS} for p in checkpoints},
        "pipeline_ms": {names[p]: {tta: summary(times[("pipeline", p, tta)]) for tta in TTAS} for p in checkpoints},
        "repeats": repeats,
        "device": describe_device(resolve_device(ui.choices.PREDICT_DEVICE)),
        "photos": {names[p]: photo_for(get_predictor(p).classes).name for p in checkpoints},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="counted rounds (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="rounds run first and not counted (default 3)")
    parser.add_argument("--checkpoint", action="append", help="a checkpoint to measure (repeatable; default: "
                                                              "every shipped one)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be at least 1 and --warmup at least 0.")

    with contextlib.redirect_stdout(sys.stderr):  # Gradio prints as servers start and close; stdout is the report
        report = measure(args.repeats, args.warmup, listed_checkpoints(args.checkpoint))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    floor = report["floor_ms"]
    print(f"{report['repeats']} rounds on {report['device']}; median / p95 in ms")
    print(f"floor (trivial image → label endpoint): {floor['median']:.1f} / {floor['p95']:.1f}")
    for name in report["predict_ms"]:
        for tta in TTAS:
            endpoint, pipeline = report["predict_ms"][name][tta], report["pipeline_ms"][name][tta]
            print(f"{name:<12} {tta:<9} /predict {endpoint['median']:7.1f} / {endpoint['p95']:7.1f}  "
                  f"(floor + {endpoint['median'] - floor['median']:.1f})   pipeline {pipeline['median']:6.1f} / "
                  f"{pipeline['p95']:6.1f}")


if __name__ == "__main__":
    main()
