"""The network while it learns (issue 27): the snapshots a run takes hold what the run's own checkpoints,
``predict`` and ``evaluate`` say at the same moment; they are written to the run directory, survive a resume, and
stay within a fixed bound of memory and disk however long the run."""

import io
import threading
import tracemalloc

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from alexnet_core import snapshots
from alexnet_core.config import TrainConfig
from alexnet_core.evaluate import evaluate_checkpoint
from alexnet_core.events import EndEvent, EpochEvent, SnapshotEvent, StepEvent
from alexnet_core.predict import get_predictor
from alexnet_core.runner import TrainingRunner
from alexnet_core.train import train
from tests.unit.test_train import tiny_config, tiny_folder  # noqa: F401  (a fixture)


def snapshot_events(events):
    return [e for e in events if isinstance(e, SnapshotEvent)]


@pytest.fixture(scope="module")
def finished_run(tiny_folder, tmp_path_factory):  # noqa: F811
    """A 3-epoch run on four colour classes, its best checkpoint saved in full precision, and its events."""
    events = []
    out = tmp_path_factory.mktemp("run")
    end = train(tiny_config(tiny_folder, out, epochs=3), events.append)
    assert end.status == "finished", end.message
    return end, events


def test_a_run_snapshots_its_start_and_every_validation(finished_run):
    end, events = finished_run
    taken = snapshot_events(events)
    assert [(e.snapshot.epoch, e.snapshot.validated) for e in taken] == [(0, False), (1, True), (2, True), (3, True)]
    # Each is reported after it is written, and what is on disk is what was reported.
    for event in taken:
        on_disk = snapshots.load(event.path)
        assert torch.equal(on_disk.conv1, event.snapshot.conv1)
        assert torch.equal(on_disk.guesses, event.snapshot.guesses)
    assert [p.name for p in snapshots.paths(end.run_dir)] == [f"{i:06d}.safetensors" for i in (1, 2, 3, 4)]
    # The fixed images cover every class.
    images = taken[0].images
    assert set(images.labels.tolist()) == {0, 1, 2, 3} and len(images.labels) == snapshots.GUESS_IMAGES


def test_the_snapshots_conv1_is_the_checkpoints_conv1_at_the_same_validation(finished_run):
    end, events = finished_run
    epochs = {e.snapshot.epoch: e.snapshot for e in snapshot_events(events)}
    best_epoch = max((e for e in events if isinstance(e, EpochEvent) and e.best), key=lambda e: e.epoch).epoch
    with safe_open(end.best_path, "pt") as f:
        best_conv1 = f.get_tensor("features.conv1.weight")
    with safe_open(f"{end.run_dir}/last.safetensors", "pt") as f:
        last_conv1 = f.get_tensor("model.features.conv1.weight")
    assert torch.equal(epochs[best_epoch].conv1, best_conv1.float())
    assert torch.equal(epochs[3].conv1, last_conv1.float())
    assert not torch.equal(epochs[0].conv1, epochs[3].conv1)          # it did learn in between


def test_the_guesses_are_what_predict_says_with_that_checkpoint(finished_run):
    end, events = finished_run
    best_epoch = max((e for e in events if isinstance(e, EpochEvent) and e.best), key=lambda e: e.epoch).epoch
    event = next(e for e in snapshot_events(events) if e.snapshot.epoch == best_epoch)
    predictor = get_predictor(end.best_path)
    assert len(event.images.paths) == snapshots.GUESS_IMAGES
    for path, guess, confidence in zip(event.images.paths, event.snapshot.guesses, event.snapshot.confidences):
        name, probability = predictor.predict(path, top_k=1).top_k[0]
        assert name == event.images.classes[int(guess)]
        assert probability == pytest.approx(float(confidence), abs=1e-4)


def test_the_confusion_matrix_is_evaluates_on_the_validation_split(finished_run, tiny_folder):  # noqa: F811
    end, events = finished_run
    best_epoch = max((e for e in events if isinstance(e, EpochEvent) and e.best), key=lambda e: e.epoch).epoch
    snapshot = next(e.snapshot for e in snapshot_events(events) if e.snapshot.epoch == best_epoch)
    result = evaluate_checkpoint(end.best_path, str(tiny_folder), split="val")
    assert torch.equal(snapshot.confusion, result.confusion())
    assert snapshot.per_class(result.classes) == pytest.approx(result.per_class())


def test_the_snapshots_survive_a_resume_and_go_on_numbering(tiny_folder, tmp_path):  # noqa: F811
    stop, events = threading.Event(), []

    def on_event(event):
        events.append(event)
        if isinstance(event, StepEvent) and event.step == 8:     # in epoch 2 (6 steps an epoch)
            stop.set()

    end = train(tiny_config(tiny_folder, tmp_path / "run", epochs=3), on_event, stop)
    assert end.status == "stopped"
    before = [p.name for p in snapshots.paths(tmp_path / "run")]
    assert len(before) == 3                      # the start, epoch 1, the stop in epoch 2
    resumed = []
    end = train(TrainConfig(resume=str(tmp_path / "run"), epochs=3, device="cpu"), resumed.append)
    assert end.status == "finished", end.message
    after = [p.name for p in snapshots.paths(tmp_path / "run")]
    assert after[:3] == before and len(after) > 3
    assert [e.snapshot.index for e in snapshot_events(resumed)] == list(range(4, len(after) + 1))
    assert snapshots.load_images(tmp_path / "run") is not None
    assert not any(e.snapshot.epoch == 0 for e in snapshot_events(resumed))   # no second "random start"


def _fake_snapshot(index: int, classes: int = 10) -> snapshots.Snapshot:
    return snapshots.Snapshot(index, index, index * 100, float(index), torch.randn(64, 3, 3, 3),
                              {f"conv{i}": torch.rand(snapshots.TOP_CHANNELS, 8, 8).half() for i in range(1, 6)},
                              {f"conv{i}": list(range(snapshots.TOP_CHANNELS)) for i in range(1, 6)},
                              torch.randint(0, classes, (24,)), torch.rand(24),
                              torch.randint(0, 50, (classes, classes)), 0.5)


def test_a_thousand_epochs_keep_one_snapshot_in_memory_and_a_bounded_folder(tmp_path):
    images = snapshots.SnapshotImages(torch.zeros(24, 3, 32, 32, dtype=torch.uint8), torch.arange(24) % 10,
                                      [str(i) for i in range(10)], torch.zeros(3, 32, 32, dtype=torch.uint8))
    snapshots.save_images(tmp_path, images)
    runner = TrainingRunner()
    tracemalloc.start()
    for epoch in range(1, 1001):
        snapshot = _fake_snapshot(epoch)
        path = snapshots.save(tmp_path, snapshot)
        runner._on_event(StepEvent(epoch, 1000, epoch * 100, 100_000, 1.0, 0.1, 1000.0, 1.0))
        runner._on_event(EpochEvent(epoch, 1000, epoch * 100, 1.0, 0.5, 1.0, 0.5, 0.1, 1.0, float(epoch), False))
        runner._on_event(SnapshotEvent(snapshot, images, str(path)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    state = runner.snapshot()
    assert state.latest.index == 1000 and state.snapshots_taken == 1000
    # Memory: one snapshot's tensors (the newest) and a record per epoch; Python objects peaked under 4 MB.
    assert snapshots.nbytes(state.latest) < 64 * 1024
    assert peak < 4 * 1024 * 1024, f"{peak / 1e6:.1f} MB of Python objects for 1,000 epochs"
    # Disk: at most MAX_SNAPSHOTS files, the first and the newest kept.
    files = snapshots.paths(tmp_path)
    assert len(files) <= snapshots.MAX_SNAPSHOTS
    assert files[0].stem == "000001" and files[-1].stem == "001000"
    assert sum(f.stat().st_size for f in files) < snapshots.MAX_SNAPSHOTS * 64 * 1024


def test_the_pictures_of_a_snapshot(finished_run):
    end, events = finished_run
    last = snapshot_events(events)[-1]
    filters = snapshots.filters_image(last.snapshot)
    assert filters.width > 100 and filters.mode == "RGB"
    assert snapshots.features_image(last.snapshot, "conv1").width > 0
    guesses = snapshots.guesses_image(last.snapshot, last.images)
    assert guesses.width == 8 * (snapshots.TILE + 8)
    gif = snapshots.filters_animation(end.run_dir)
    assert gif[:6] == b"GIF89a"
    assert Image.open(io.BytesIO(gif)).n_frames == len(snapshots.paths(end.run_dir))


def test_a_run_without_snapshots_writes_none(tiny_folder, tmp_path):  # noqa: F811
    events = []
    end = train(tiny_config(tiny_folder, tmp_path / "run", epochs=1), events.append, snapshots=False)
    assert end.status == "finished" and not snapshot_events(events)
    assert not (tmp_path / "run" / "snapshots").exists()
    assert isinstance(events[-1], EndEvent)


def test_a_long_epoch_is_snapshotted_mid_way(tiny_folder, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(snapshots, "SNAPSHOT_SECONDS", 0.0)     # every step counts as "30 s later"
    events = []
    end = train(tiny_config(tiny_folder, tmp_path / "run", epochs=1), events.append)
    assert end.status == "finished"
    taken = [(e.snapshot.step, e.snapshot.validated) for e in snapshot_events(events)]
    # The start, then steps 1-5 mid-epoch (no confusion matrix), then the validation after step 6.
    assert taken == [(0, False), (1, False), (2, False), (3, False), (4, False), (5, False), (6, True)]
