"""How /predict answers while a training run is going, set against the same calls on an idle app, in one run.

    python -m bench.predict_under_load [--rounds 3] [--calls 30] [--burst 50] [--model alexnet_cifar] [--images 1500]

Starts gradio_app.build_app() in this process on a free local port (queued as gradio_app.launch queues it),
with its runs and uploads in a temporary folder and a generated 3-class ImageFolder (32x32 images, --images of
them) in its uploads, so that it is one of the Train tab's data choices. Then, phase by phase:

- idle: nothing else is running;
- training: a run of --model started through the app's own /train endpoint (batch 128, SGD, as the Train tab
  starts it), with the runner's defaults: the training thread at a lower OS priority (runner.training_nice);
- training, same priority: the same run with training_nice = 0, as the runner was before it lowered it.

The phases run --rounds times, interleaved (the two training phases swap places every other round), so that a
busy spell of the machine hits all of them. In each it times (after --warmup calls) --calls sequential /predict
calls through gradio_client, each uploading the same photo (a CIFAR-10 test image from ../shared/data where
present, else a generated one), and a burst of --burst /predict calls fired at once from as many threads (each
timed from its own start, so queueing is included). For the training phases it also reads the run's throughput
(images/s) for --window seconds before the calls and during them. Prints one JSON object: per phase, the median
and 95th percentile in milliseconds of all its calls over the rounds, and the median over rounds of the burst's
length and the training throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from gradio_client import Client, handle_file

import gradio_app
import ui.choices
import ui.photos
import ui.settings
from alexnet_core.devices import describe_machine
from alexnet_core.runner import RUNNER
from tests.helpers import class_image, make_image_folder

REPO = Path(__file__).resolve().parents[1]

BATCH = 128


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered), 1), "p95_ms": round(p95, 1),
            "max_ms": round(ordered[-1], 1), "n": len(ordered)}


def handler_ms(info: str) -> float:
    """The time the handler itself reports ("12.3 ms on cpu (decode, …)")."""
    return float(info.split(" ms on ", 1)[0])


def timed_predict(client: Client, photo: str) -> tuple[float, float]:
    start = time.perf_counter()
    label, info = client.predict(handle_file(photo), api_name="/predict")
    wall = 1000 * (time.perf_counter() - start)
    if not (label or {}).get("confidences"):
        raise RuntimeError(f"/predict did not classify the photo: {info}")
    return wall, handler_ms(info)


def measure(client: Client, photo: str, calls: int, burst: int, warmup: int) -> dict:
    """Raw timings of one phase in one round: sequential calls (wall and in-handler ms) and one burst."""
    for _ in range(warmup):
        timed_predict(client, photo)
    sequential = [timed_predict(client, photo) for _ in range(calls)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=burst) as pool:
        fired = list(pool.map(lambda _: timed_predict(client, photo), range(burst)))
    return {"sequential": [wall for wall, _ in sequential], "in_handler": [inside for _, inside in sequential],
            "burst": [wall for wall, _ in fired], "burst_all_s": time.perf_counter() - start}


def summarise(rounds: list[dict]) -> dict:
    """One phase over every round: percentiles of all its calls, and the median of per-round figures."""
    pooled = {key: [v for r in rounds for v in r[key]] for key in ("sequential", "in_handler", "burst")}
    result = {"sequential": percentiles(pooled["sequential"]),
              "sequential_in_handler": percentiles(pooled["in_handler"]),
              "burst": percentiles(pooled["burst"]),
              "burst_all_s_median": round(statistics.median(r["burst_all_s"] for r in rounds), 2)}
    for key in ("training_images_per_s_alone", "training_images_per_s_during_calls"):
        if key in rounds[0]:
            result[key + "_median"] = round(statistics.median(r[key] for r in rounds), 1)
    if "training_status_after_calls" in rounds[0]:
        result["training_statuses_after_calls"] = sorted({r["training_status_after_calls"] for r in rounds})
        result["training_nice"] = rounds[0]["training_nice"]
    return result


def throughput(seconds: float) -> float:
    """The run's images per second over the next ``seconds``, from its step counter."""
    first = RUNNER.snapshot()
    t0 = time.perf_counter()
    time.sleep(seconds)
    last = RUNNER.snapshot()
    return round((last.step - first.step) * BATCH / (time.perf_counter() - t0), 1)


def training_phase(client: Client, data: str, model: str, nice: int, args) -> dict:
    RUNNER.training_nice = nice
    answer = client.predict(dict(model=model, data=data, device="cpu", epochs=1000, batch_size=BATCH, lr=0.01),
                            api_name="/train")
    if not answer.startswith("Started"):
        raise RuntimeError(f"/train did not start: {answer}")
    deadline = time.time() + 300
    while RUNNER.snapshot().step < 5:  # past loading the data and the first steps
        if time.time() > deadline or RUNNER.snapshot().status == "failed":
            raise RuntimeError(f"training did not get going: {RUNNER.snapshot().message}")
        time.sleep(0.2)
    alone = throughput(args.window)
    start_step, start = RUNNER.snapshot().step, time.perf_counter()
    result = measure(client, args.photo, args.calls, args.burst, args.warmup)
    steps, seconds = RUNNER.snapshot().step - start_step, time.perf_counter() - start
    status = RUNNER.snapshot().status
    RUNNER.stop()
    RUNNER.wait(120)
    return result | {"training_nice": nice, "training_images_per_s_alone": alone,
                     "training_images_per_s_during_calls": round(steps * BATCH / seconds, 1),
                     "training_steps_during_calls": steps, "training_status_after_calls": status}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30, help="sequential /predict calls per phase and round")
    parser.add_argument("--burst", type=int, default=50, help="concurrent /predict calls per phase and round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--model", default="alexnet_cifar", help="the variant the training run trains")
    parser.add_argument("--images", type=int, default=1500, help="training images in the generated data")
    parser.add_argument("--window", type=float, default=5.0, help="seconds to read training throughput over")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three phases, interleaved")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="predict-under-load-"))
    ui.settings.RUNS_DIR, ui.settings.UPLOADS_DIR = home / "runs", home / "uploads"
    per_class = args.images // 3
    data = make_image_folder(home / "uploads" / "bench", ["red", "green", "blue"],
                             n_per_class={"train": per_class, "val": 20}, size=32)
    examples = [row[0] for row in ui.photos.example_photos() if "cifar10" in row[0]]
    if examples:
        args.photo = examples[0]
    else:
        args.photo = str(home / "photo.png")
        class_image(0, 32, np.random.default_rng(0)).save(args.photo)

    app = gradio_app.build_app()
    options = dict(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    if hasattr(gradio_app, "launch"):  # the app's own queue settings, as deployed
        gradio_app.launch(app, **options)
    else:
        app.queue().launch(**options)
    try:
        client = Client(app.local_url, verbose=False)
        raw: dict[str, list] = {"idle": [], "training": [], "training_same_priority": []}
        nice = RUNNER.training_nice or 10
        for round_ in range(args.rounds):  # interleaved, so that a busy spell of the machine hits every phase
            raw["idle"].append(measure(client, args.photo, args.calls, args.burst, args.warmup))
            order = [("training", nice), ("training_same_priority", 0)]
            for name, value in order if round_ % 2 == 0 else order[::-1]:
                raw[name].append(training_phase(client, str(data), args.model, value, args))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        RUNNER.training_nice = nice
        phases = {name: summarise(rounds) for name, rounds in raw.items()}
    finally:
        RUNNER.stop()
        RUNNER.wait(120)
        with contextlib.redirect_stdout(sys.stderr):  # Gradio says "Closing server …" on stdout
            app.close()
    report = {
        "command": "python -m bench.predict_under_load " + " ".join(sys.argv[1:]),
        "machine": describe_machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "checkpoint": Path(ui.choices.default_checkpoint() or "").name, "photo": Path(args.photo).name,
        "training_run": {"model": args.model, "images": 3 * per_class, "batch_size": BATCH, "device": "cpu"},
        "predict_concurrency": ui.settings.CONCURRENCY,
        "calls": args.calls, "burst": args.burst, "rounds": args.rounds, "phases": phases,
    }
    print(json.dumps(report, indent=2))
    os._exit(0)  # Gradio's server threads would otherwise keep the process alive a while


if __name__ == "__main__":
    main()
