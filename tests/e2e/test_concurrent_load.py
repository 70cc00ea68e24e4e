"""Hardening, load: 50 concurrent /predict calls while a training run is going all complete, and neither side
starves the other. Latency figures: bench/predict_under_load.py, docs/benchmarks.md."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from alexnet_core.runner import RUNNER, TrainingRunner
from tests.helpers import class_image, wait_for

CIFAR10 = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}




@pytest.mark.slow
def test_fifty_concurrent_predictions_during_a_training_run_all_complete(live_app, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(live_app.url, verbose=False)
    photo = tmp_path / "photo.png"
    class_image(1, 32, np.random.default_rng(1)).save(photo)
    client.predict(handle_file(str(photo)), api_name="/predict")  # warm: the first call sets the client up

    from tests.helpers import client_owner

    owner = client_owner(client)
    job = client.submit(settings=dict(model="alexnet_cifar_small", data=str(live_app.tiny_data), device="cpu",
                                      epochs=1000, batch_size=8, lr=0.01),
                        api_name="/train")  # streams the run's status until it ends
    try:
        assert wait_for(lambda: RUNNER.snapshot(owner).step >= 3), RUNNER.snapshot(owner).message
        step_before = RUNNER.snapshot(owner).step

        def one(_):
            start = time.perf_counter()
            label, info = client.predict(handle_file(str(photo)), api_name="/predict")
            return label, info, time.perf_counter() - start

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(one, range(50)))
        burst_s = time.perf_counter() - began
        during = RUNNER.snapshot(owner)
    finally:
        client.predict(api_name="/train_stop")
        assert RUNNER.wait(120, owner)

    assert len(results) == 50
    for label, info, _ in results:
        assert label["label"] in CIFAR10 and len(label["confidences"]) == 5 and "ms on cpu" in info, info
    # the run was going the whole time, and kept stepping: prediction did not starve training either
    assert during.status == "running" and during.step > step_before, during
    # nor training prediction: 50 calls queue through one worker; idle, they take about 3 s here
    assert burst_s < 90, burst_s
    assert RUNNER.snapshot(owner).status == "stopped"
    job.cancel()


@pytest.mark.skipif(not hasattr(os, "setpriority") or os.uname().sysname != "Linux",
                    reason="per-thread priority is a Linux feature")
def test_the_training_thread_runs_at_a_lower_priority_than_serving(tmp_path):
    """What keeps training from starving prediction: the runner's thread, and the threads it starts (OpenMP's,
    data workers), have a higher nice value than the threads that serve requests."""
    from alexnet_core.config import TrainConfig
    from alexnet_core.events import StartEvent
    from tests.helpers import make_image_folder

    seen = {}

    class Recording(TrainingRunner):
        def _on_event(self, event):
            if isinstance(event, StartEvent):
                seen["training"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
                child = threading.Thread(target=lambda: seen.update(
                    child=os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
                child.start()
                child.join()
            super()._on_event(event)

    folder = make_image_folder(tmp_path / "data", ["red", "green"], n_per_class=8, size=32)
    runner = Recording()
    serving = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    runner.start(TrainConfig(model="alexnet_cifar_small", data=str(folder), epochs=1, batch_size=8, device="cpu",
                             out=str(tmp_path / "run")))
    assert runner.wait(120) and runner.snapshot().status == "finished", runner.snapshot().message
    assert TrainingRunner.training_nice >= 5
    assert seen["training"] == min(19, serving + TrainingRunner.training_nice) and seen["child"] == seen["training"]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == serving  # serving threads unchanged
