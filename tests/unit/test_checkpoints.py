"""Checkpoints: metadata, fp16 storage, atomic writes, clear errors, no pickle, resumable training state."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from alexnet_core.checkpoints import (
    FORMAT,
    METADATA_KEY,
    CheckpointError,
    _read_card_test_accuracy,
    atomic_write_bytes,
    list_checkpoints,
    load_checkpoint,
    load_model,
    load_train_state,
    load_user_weights,
    model_meta,
    read_metadata,
    read_train_extra,
    save_checkpoint,
    save_train_state,
)
from alexnet_core.models import build_model
from tests.helpers import assert_one_sentence

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = "alexnet_cifar_small"
CIFAR_PREPROCESS = {"input_size": 32, "store_size": 32, "in_channels": 3, "mean": [0.4914, 0.4822, 0.4465],
                    "std": [0.2470, 0.2435, 0.2616]}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def small_meta(**extra) -> dict:
    return model_meta(SMALL, batch_norm=False, num_classes=10, in_channels=3, classes=CIFAR_CLASSES,
                      preprocess=CIFAR_PREPROCESS, **extra)


def trained_bn_model() -> torch.nn.Module:
    """A BatchNorm model whose running stats and counters have moved away from their defaults."""
    torch.manual_seed(0)
    model = build_model(SMALL, batch_norm=True)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return model.eval()


def write_with_header(path: Path, tensors: dict, meta_json: str, **header) -> Path:
    """Writes a file the way a forger would: valid safetensors, our header, whatever metadata we like."""
    save_file(tensors, str(path), metadata={"format": FORMAT, "kind": "model", METADATA_KEY: meta_json,
                                            **header})
    return path




# --- metadata -----------------------------------------------------------------------------------


def test_metadata_round_trips_and_model_loads_in_eval_mode(tmp_path):
    torch.manual_seed(1)
    model = build_model(SMALL)
    history = [{"epoch": 1, "train_loss": 1.9, "val_acc": 0.41}, {"epoch": 2, "train_loss": 1.5, "val_acc": 0.52}]
    meta = small_meta(data="cifar10", epochs=2, history=history, best_val_acc=0.52, wall_time_s=12.5,
                      device="cpu (2 threads)", config={"lr": 0.01, "batch_size": 64, "optimizer": "sgd"})
    path = save_checkpoint(tmp_path / "best.safetensors", model.state_dict(), meta)

    assert read_metadata(path) == json.loads(json.dumps(meta))
    assert set(meta["versions"]) >= {"torch", "torchvision", "alexnet_core", "python"}
    assert meta["versions"]["torch"] == torch.__version__
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT

    loaded, loaded_meta = load_model(path)
    assert not loaded.training
    assert loaded_meta["classes"] == CIFAR_CLASSES
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


def test_model_meta_refuses_metadata_prediction_could_not_use():
    with pytest.raises(CheckpointError, match="names 9 classes but num_classes is 10"):
        model_meta(SMALL, batch_norm=False, num_classes=10, in_channels=3, classes=CIFAR_CLASSES[:9],
                   preprocess=CIFAR_PREPROCESS)
    with pytest.raises(CheckpointError, match="preprocess.mean is not a list of 1 numbers"):
        model_meta(SMALL, batch_norm=False, num_classes=10, in_channels=1, classes=CIFAR_CLASSES,
                   preprocess=CIFAR_PREPROCESS)


# --- fp16 storage -------------------------------------------------------------------------------


def test_half_storage_halves_the_file_and_loads_as_float32(tmp_path):
    model = trained_bn_model()
    state = model.state_dict()
    full = save_checkpoint(tmp_path / "full.safetensors", state, small_meta() | {"batch_norm": True})
    half = save_checkpoint(tmp_path / "half.safetensors", state, small_meta() | {"batch_norm": True}, half=True)

    ratio = half.stat().st_size / full.stat().st_size
    assert 0.45 < ratio < 0.55, ratio
    with safe_open(str(half), framework="pt") as f:
        assert f.get_tensor("classifier.fc3.weight").dtype == torch.float16
        assert f.get_tensor("features.bn1.num_batches_tracked").dtype == torch.int64

    loaded, _ = load_checkpoint(half)
    assert loaded["features.bn1.num_batches_tracked"].item() == 3
    for key, original in state.items():
        if original.is_floating_point():
            assert loaded[key].dtype == torch.float32, key
            # Exactly the fp16 rounding of the original, so within fp16's relative precision.
            torch.testing.assert_close(loaded[key], original.half().float(), rtol=0, atol=0)
            torch.testing.assert_close(loaded[key], original, rtol=1e-3, atol=1e-6)

    restored, _ = load_model(half)
    x = torch.randn(64, 3, 32, 32)
    logits, restored_logits = model(x), restored(x)
    torch.testing.assert_close(restored_logits, logits, rtol=1e-2, atol=1e-3)
    assert (restored_logits.argmax(1) == logits.argmax(1)).float().mean() >= 0.95


def test_half_storage_keeps_float32_where_fp16_would_overflow(tmp_path):
    big = torch.tensor([1.0e6, -3.0e5, 1.2345678])
    path = save_checkpoint(tmp_path / "x.safetensors", {"big": big, "small": torch.ones(3) / 3}, small_meta(),
                           half=True)
    loaded, _ = load_checkpoint(path)
    torch.testing.assert_close(loaded["big"], big, rtol=0, atol=0)
    assert torch.isfinite(loaded["big"]).all()
    assert loaded["small"].dtype == torch.float32


# --- atomic writes ------------------------------------------------------------------------------


def test_atomic_writes_leave_only_the_target(tmp_path):
    model = build_model(SMALL)
    for _ in range(2):
        save_checkpoint(tmp_path / "best.safetensors", model.state_dict(), small_meta())
    atomic_write_bytes(tmp_path / "run.json", b'{"epoch": 1}')
    atomic_write_bytes(tmp_path / "run.json", b'{"epoch": 2}')
    assert sorted(os.listdir(tmp_path)) == ["best.safetensors", "run.json"]
    assert json.loads((tmp_path / "run.json").read_bytes()) == {"epoch": 2}


def test_a_failed_save_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    import alexnet_core.checkpoints as checkpoints

    path = save_checkpoint(tmp_path / "best.safetensors", {"w": torch.full((10,), 1.0)}, small_meta(epoch=1))

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoints, "save_file", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": torch.full((10,), 2.0)}, small_meta(epoch=2))
    assert os.listdir(tmp_path) == ["best.safetensors"]
    tensors, meta = load_checkpoint(path)
    assert meta["epoch"] == 1 and tensors["w"].eq(1.0).all()


SAVE_FOREVER = """
import sys, torch
from alexnet_core.checkpoints import model_meta, save_checkpoint
meta = model_meta("alexnet_cifar_small", batch_norm=False, num_classes=10, in_channels=3,
                  classes=[str(i) for i in range(10)], preprocess={"input_size": 32, "mean": [0.5] * 3,
                  "std": [0.25] * 3})
weights = torch.empty(16 * 2**20)  # 64 MiB, so that each save takes a while
for i in range(1, 10**6):
    meta["iteration"] = i
    save_checkpoint(sys.argv[1], {"w": weights.fill_(i)}, meta)
    print(i, flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX kill -9")
def test_kill_9_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "best.safetensors"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    for _attempt in range(5):
        saver = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(path)], stdout=subprocess.PIPE,
                                 env=env, text=True)
        try:
            assert saver.stdout.readline().strip() == "1", "the first save did not finish"
            # Wait until the next save is under way (its temporary file exists), then kill it.
            deadline = time.monotonic() + 30
            while not any(name.endswith(".tmp") for name in os.listdir(tmp_path)):
                assert time.monotonic() < deadline, "no save started"
            saver.send_signal(signal.SIGKILL)
            saver.wait(timeout=30)
        finally:
            saver.kill()
            saver.stdout.close()
        leftovers = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
        if leftovers:  # the kill did land mid-save (rarely the save finishes first: try again)
            break
    else:
        pytest.fail("could not kill the saver in the middle of a save")

    tensors, meta = load_checkpoint(path)
    assert meta["iteration"] >= 1
    assert tensors["w"].numel() == 16 * 2**20 and tensors["w"].eq(meta["iteration"]).all()
    assert list_checkpoints(tmp_path)[0].path == path  # the leftover temporary file is no checkpoint


# --- clear errors -------------------------------------------------------------------------------


@pytest.fixture
def good_checkpoint(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "good.safetensors", build_model(SMALL).state_dict(), small_meta())


def test_truncated_file_gives_a_sentence(tmp_path, good_checkpoint):
    data = good_checkpoint.read_bytes()
    for cut in (len(data) // 2, 20):
        bad = tmp_path / "truncated.safetensors"
        bad.write_bytes(data[:cut])
        for load in (read_metadata, load_checkpoint, load_model):
            with pytest.raises(CheckpointError) as err:
                load(bad)
            assert_one_sentence(err.value, "truncated.safetensors", "not a complete safetensors file",
                                end=".", exact=True)


def test_random_bytes_and_missing_file_give_a_sentence(tmp_path):
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError) as err:
        load_model(noise)
    assert_one_sentence(err.value, "noise.safetensors", "not a complete safetensors file", end=".", exact=True)
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "absent.safetensors")
    assert_one_sentence(err.value, "There is no checkpoint file", end=".", exact=True)


def test_safetensors_without_our_metadata_gives_a_sentence(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file(build_model(SMALL).state_dict(), str(plain))
    with pytest.raises(CheckpointError) as err:
        load_model(plain)
    assert_one_sentence(err.value, "plain.safetensors", "not an AlexNet Studio checkpoint", end=".", exact=True)

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        read_metadata(other)
    assert_one_sentence(err.value, "not an AlexNet Studio checkpoint", end=".", exact=True)


def test_forged_metadata_gives_a_sentence(tmp_path):
    weights = build_model(SMALL).state_dict()
    meta = small_meta()
    cases = {
        "unknown model": (json.dumps(meta | {"model": "alexnet_9000"}), {}, "'alexnet_9000' is not one"),
        "missing keys": (json.dumps({k: v for k, v in meta.items() if k not in ("classes", "preprocess")}), {},
                         "lacks classes, preprocess"),
        "class count": (json.dumps(meta | {"num_classes": 5}), {}, "names 10 classes but num_classes is 5"),
        "not json": ('{"model": "alexnet_cifar_small", ', {}, "damaged AlexNet Studio metadata"),
        "bad types": (json.dumps(meta | {"in_channels": "3"}), {}, "in_channels is '3'"),
        "future format": (json.dumps(meta), {"format": "alexnet-studio/99"}, "'alexnet-studio/99'"),
    }
    for label, (meta_json, header, fragment) in cases.items():
        path = write_with_header(tmp_path / f"{label.replace(' ', '_')}.safetensors", weights, meta_json, **header)
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        assert_one_sentence(err.value, path.name, fragment, end=".", exact=True)


def test_weights_that_do_not_fit_the_described_model_name_what_differs(tmp_path):
    five_class = build_model(SMALL, num_classes=5).state_dict()
    path = write_with_header(tmp_path / "forged.safetensors", five_class, json.dumps(small_meta()))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert_one_sentence(err.value, "forged.safetensors does not fit alexnet_cifar_small",
                        "its classifier.fc5.weight is 5x192 but alexnet_cifar_small builds 10x192", end=".", exact=True)

    path = write_with_header(tmp_path / "bn.safetensors", build_model(SMALL).state_dict(),
                             json.dumps(small_meta() | {"batch_norm": True}))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert_one_sentence(err.value, "with BatchNorm", "it lacks features.bn1.weight and", end=".", exact=True)

    other_model = build_model("alexnet_cifar").state_dict()
    path = write_with_header(tmp_path / "arch.safetensors", other_model, json.dumps(small_meta()))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert_one_sentence(err.value, "its features.conv1.weight is 96x3x7x7 but alexnet_cifar_small builds 64x3x5x5",
                 end=".", exact=True)


# --- weights a user brings ----------------------------------------------------------------------


class Payload:
    """Unpickling this creates a marker file: proof that pickled code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_pickled_code_in_a_user_file_never_runs(tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe))).close()
    assert probe.exists(), "the payload must be live for this test to mean anything"

    marker = tmp_path / "pwned"
    weights = {"classifier.fc5.weight": torch.zeros(10, 192), "evil": Payload(marker)}
    torch_file = tmp_path / "model.pth"
    torch.save(weights, torch_file)
    raw_file = tmp_path / "model.pt"
    raw_file.write_bytes(pickle.dumps(weights))
    for path in (torch_file, raw_file):
        with pytest.raises(CheckpointError) as err:
            load_user_weights(path)
        assert_one_sentence(err.value, path.name, "refuses to load", end=".", exact=True)
    assert not marker.exists()


def test_user_weights_are_unwrapped_and_come_back_as_float32(tmp_path):
    model = build_model(SMALL)
    wrapped = {"epoch": 7, "state_dict": {f"module.{k}": v.half() for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "run.pth")
    loaded = load_user_weights(tmp_path / "run.pth")
    assert set(loaded) == set(model.state_dict())
    assert all(t.dtype == torch.float32 for t in loaded.values())
    model.load_state_dict(loaded)  # strict: the keys and shapes fit

    save_file(model.state_dict(), str(tmp_path / "plain.safetensors"))
    assert set(load_user_weights(tmp_path / "plain.safetensors")) == set(model.state_dict())

    (tmp_path / "weights.h5").write_bytes(b"HDF")
    with pytest.raises(CheckpointError) as err:
        load_user_weights(tmp_path / "weights.h5")
    assert_one_sentence(err.value, "weights.h5 is not a weights file", end=".", exact=True)
    torch.save({"lr": 0.1}, tmp_path / "settings.pt")
    with pytest.raises(CheckpointError) as err:
        load_user_weights(tmp_path / "settings.pt")
    assert_one_sentence(err.value, "does not hold a state dict", end=".", exact=True)


# --- resumable training state -------------------------------------------------------------------


def sgd_with_cosine(model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)


def adam_with_one_cycle(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=10)


def train_step(model, optimizer, scheduler):
    """One step on a batch drawn from torch's RNG, as a shuffled data loader would."""
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    scheduler.step()


@pytest.mark.parametrize("make_optimizer", [sgd_with_cosine, adam_with_one_cycle])
def test_training_state_round_trip_continues_exactly(tmp_path, make_optimizer):
    torch.manual_seed(0)
    model = build_model(SMALL, batch_norm=True).train()
    optimizer, scheduler = make_optimizer(model)
    for _ in range(2):
        train_step(model, optimizer, scheduler)
    random.seed(5)
    extra = {"epoch": 2, "step": 2, "best_val_acc": 0.31, "history": [{"val_acc": 0.31}], "config": {"lr": 0.05}}
    path = save_train_state(tmp_path / "last.safetensors", model, optimizer, scheduler=scheduler, extra=extra)
    python_draw = random.random()
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    train_step(model, optimizer, scheduler)

    torch.manual_seed(123)  # a fresh process: other weights, other RNG state
    random.seed(123)
    resumed = build_model(SMALL, batch_norm=True).train()
    resumed_optimizer, resumed_scheduler = make_optimizer(resumed)
    assert read_train_extra(path) == extra
    assert load_train_state(path, resumed, resumed_optimizer, scheduler=resumed_scheduler) == extra
    assert random.random() == python_draw
    # Same learning rates, momenta and betas, down to their types (Adam's betas are a tuple, not a list).
    assert [{k: v for k, v in group.items() if k != "params"} for group in resumed_optimizer.param_groups] == settings
    train_step(resumed, resumed_optimizer, resumed_scheduler)

    for (name, p), (_, q) in zip(model.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(p, q), name
    assert resumed_scheduler.get_last_lr() == scheduler.get_last_lr()
    for p, q in zip(model.parameters(), resumed.parameters()):
        saved, restored = optimizer.state[p], resumed_optimizer.state[q]
        assert saved.keys() == restored.keys()
        for key in saved:
            assert torch.equal(torch.as_tensor(saved[key]), torch.as_tensor(restored[key])), key


def test_training_state_refuses_what_does_not_fit_and_changes_nothing(tmp_path):
    torch.manual_seed(0)
    model = build_model(SMALL)
    optimizer, scheduler = sgd_with_cosine(model)
    path = save_train_state(tmp_path / "last.safetensors", model, optimizer, scheduler=scheduler, extra={})

    other = build_model(SMALL)
    with pytest.raises(CheckpointError) as err:
        load_train_state(path, other, torch.optim.Adam(other.parameters()))
    assert_one_sentence(err.value, "holds SGD state but this run uses Adam", end=".", exact=True)

    wider = build_model(SMALL, num_classes=5)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_train_state(path, wider, sgd_with_cosine(wider)[0])
    assert_one_sentence(err.value, "its classifier.fc5.weight is 10x192 but this run's model builds 5x192",
                 end=".", exact=True)
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())

    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert_one_sentence(err.value, "is a resumable training state, not a model checkpoint", end=".", exact=True)
    best = save_checkpoint(tmp_path / "best.safetensors", model.state_dict(), small_meta())
    forged = write_with_header(tmp_path / "forged.safetensors", {"w": torch.zeros(1)}, json.dumps({"extra": {}}),
                               kind="train_state")
    for read in (read_train_extra, lambda p: load_train_state(p, model, optimizer)):
        with pytest.raises(CheckpointError) as err:
            read(best)
        assert_one_sentence(err.value, "not a training state", end=".", exact=True)
        with pytest.raises(CheckpointError) as err:
            read(forged)
        assert_one_sentence(err.value, "forged.safetensors has incomplete training-state metadata", end=".", exact=True)


# --- finding checkpoints ------------------------------------------------------------------------


def test_list_checkpoints_finds_nested_runs_newest_first_and_skips_the_rest(tmp_path):
    weights = build_model(SMALL).state_dict()
    older = save_checkpoint(tmp_path / "runs" / "cifar_a" / "best.safetensors", weights,
                            small_meta(data="cifar10", best_val_acc=0.612))
    newer = save_checkpoint(tmp_path / "runs" / "deep" / "cifar_b" / "best.safetensors", weights,
                            small_meta(data="../shared/data/cifar10", best_val_acc=0.705))
    os.utime(older, (time.time() - 100, time.time() - 100))
    model = build_model(SMALL)
    save_train_state(tmp_path / "runs" / "cifar_a" / "last.safetensors", model,
                     torch.optim.SGD(model.parameters(), lr=0.1), extra={})
    (tmp_path / "runs" / "broken.safetensors").write_bytes(b"\x00" * 100)
    save_file({"w": torch.zeros(1)}, str(tmp_path / "runs" / "foreign.safetensors"))
    (tmp_path / "runs" / "notes.txt").write_text("not a checkpoint")

    found = list_checkpoints(tmp_path / "runs", tmp_path / "absent")
    assert [info.path for info in found] == [newer, older]
    assert found[0].name == "CIFAR-10 · 10 classes · 70.5% val · cifar_b"  # issue 19: labels a person reads
    assert found[0].model == SMALL and found[0].classes == CIFAR_CLASSES
    assert found[0].best_val_acc == pytest.approx(0.705)
    assert found[0].created and found[0].created.endswith("+00:00")

    assert list_checkpoints(tmp_path / "runs", recursive=False) == []
    assert [info.path for info in list_checkpoints(newer, tmp_path / "runs")] == [newer, older]


def test_a_runs_snapshots_are_no_checkpoints_and_are_skipped_without_a_log_line(tmp_path, caplog):
    # The live views write snapshots/NNNN.safetensors several times an epoch: every listing logged one
    # "Left out of the checkpoint lists" line per file, hundreds for one run.
    run = tmp_path / "runs" / "cifar_a"
    best = save_checkpoint(run / "best.safetensors", build_model(SMALL).state_dict(), small_meta())
    (run / "snapshots").mkdir()
    for name in ("000001", "000002", "images"):
        save_file({"w": torch.zeros(1)}, str(run / "snapshots" / f"{name}.safetensors"))
    with caplog.at_level("WARNING", logger="alexnet_core.checkpoints"):
        assert [info.path for info in list_checkpoints(tmp_path / "runs")] == [best]
    assert "Left out" not in caplog.text


def test_a_checkpoint_with_a_model_card_is_labelled_by_its_test_accuracy(tmp_path):
    # Issue 19: "CIFAR-10 · 10 classes · 89.45% test", the number from the card's plain top-1 line.
    path = save_checkpoint(tmp_path / "cifar10.safetensors", build_model(SMALL).state_dict(),
                           small_meta(data="../shared/data/cifar10", best_val_acc=0.91))
    assert list_checkpoints(path)[0].name == "CIFAR-10 · 10 classes · 91.0% val"
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "cifar10.md").write_text(
        "- **Top-1 on the test split (10,000 images): 89.45%**; with flip test-time augmentation 89.99%\n")
    assert list_checkpoints(path)[0].name == "CIFAR-10 · 10 classes · 89.45% test"


def test_a_changed_model_card_is_read_again(tmp_path):
    # The card's figure is cached by (path, mtime_ns, size): a listing must still see a card rewritten since.
    path = save_checkpoint(tmp_path / "cifar10.safetensors", build_model(SMALL).state_dict(),
                           small_meta(data="../shared/data/cifar10", best_val_acc=0.91))
    card = tmp_path / "cards" / "cifar10.md"
    card.parent.mkdir()
    line = "- **Top-1 on the test split (10,000 images): {}%**\n"
    card.write_text(line.format("89.45"))
    os.utime(card, ns=(1_000_000_000, 1_000_000_000))
    assert list_checkpoints(path)[0].name == "CIFAR-10 · 10 classes · 89.45% test"
    hits = _read_card_test_accuracy.cache_info().hits
    assert list_checkpoints(path)[0].name == "CIFAR-10 · 10 classes · 89.45% test"
    assert _read_card_test_accuracy.cache_info().hits > hits                 # not read again: nothing changed

    card.write_text(line.format("88.75"))                      # the same size: only the time tells
    os.utime(card, ns=(2_000_000_000, 2_000_000_000))
    assert list_checkpoints(path)[0].name == "CIFAR-10 · 10 classes · 88.75% test"
    card.write_text(line.format("87.5"))                       # the same time: only the size tells
    os.utime(card, ns=(2_000_000_000, 2_000_000_000))
    assert list_checkpoints(path)[0].name == "CIFAR-10 · 10 classes · 87.5% test"
    card.unlink()
    assert list_checkpoints(path)[0].name == "CIFAR-10 · 10 classes · 91.0% val"


def test_the_shipped_checkpoints_have_labels_a_person_reads():
    labels = {info.path.name: info.name for info in list_checkpoints(Path(__file__).parents[2] / "checkpoints")}
    if not labels:
        pytest.skip("no shipped checkpoints in this checkout")
    assert re.fullmatch(r"CIFAR-10 · 10 classes · \d\d\.\d+% test", labels["cifar10.safetensors"]), labels
    assert re.fullmatch(r"Flowers · 5 classes · \d\d\.\d+% test", labels["flowers.safetensors"]), labels
