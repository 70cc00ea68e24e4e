"""Hardening, checkpoints: no untrusted unpickling anywhere in the code, and forged or damaged checkpoints beyond
those of tests/test_checkpoints.py (sizes that would crash the first forward pass or make every photo decode
huge, headers that lie) get one sentence wherever they are loaded: the library, the predictor, the app.
kill -9 of a real training run leaves best.safetensors loadable and last.safetensors resumable."""

from __future__ import annotations

import ast
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import gradio as gr
import pytest
import torch
from safetensors.torch import save_file

import gradio_app
from alexnet_core import checkpoints, predict
from alexnet_core.checkpoints import CheckpointError, load_model, read_metadata
from alexnet_core.models import build_model
from alexnet_core.train import TrainConfig, train
from tests.helpers import class_image, make_image_folder

REPO = Path(__file__).resolve().parents[1]
SMALL = "alexnet_cifar_small"


def one_sentence(text: str, *words: str) -> None:
    assert "\n" not in text and "Traceback" not in text and text.rstrip().endswith((".", ")")), text
    for word in words:
        assert word.lower() in text.lower(), text


# --- no untrusted unpickling anywhere -------------------------------------------------------------------------


def _python_files() -> list[Path]:
    return sorted([*REPO.glob("alexnet_core/*.py"), *REPO.glob("*.py"), *REPO.glob("bench/*.py"),
                   *REPO.glob("docs/*.py")])


UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"),
              ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("marshal", "loads"), ("shelve", "open"),
              ("numpy", "load"), ("np", "load"), ("yaml", "load"), ("yaml", "unsafe_load"), ("pd", "read_pickle"),
              ("pandas", "read_pickle")}


def test_no_code_in_the_project_unpickles_untrusted_data():
    """torch.load always with weights_only=True; no pickle, dill, joblib, marshal, shelve, np.load, yaml.load."""
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None,
                    func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None))
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name[1] == "load" and name[0] == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    found.append(f"{where} torch.load without weights_only=True")
            elif name in UNPICKLERS or (name[0] is None and name[1] in ("loads", "Unpickler")):
                found.append(f"{where} {name[0]}.{name[1]}")
    assert not found, found
    assert REPO != Path(__file__).resolve().parents[1] or len(_python_files()) > 15  # it did look at the code


def test_the_scan_would_catch_an_unsafe_load(tmp_path, monkeypatch):
    bad = tmp_path / "alexnet_core"
    bad.mkdir()
    (bad / "evil.py").write_text("import torch, pickle\nx = torch.load('a.pt')\ny = pickle.loads(b'')\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError) as error:
        test_no_code_in_the_project_unpickles_untrusted_data()
    assert "torch.load without weights_only=True" in str(error.value) and "pickle.loads" in str(error.value)


# --- forged sizes -----------------------------------------------------------------------------------------------


def meta(**preprocess) -> dict:
    base = {"input_size": 32, "store_size": 32, "in_channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    return {"model": SMALL, "batch_norm": False, "num_classes": 3, "in_channels": 3, "classes": ["a", "b", "c"],
            "preprocess": base | preprocess}


def forged(path: Path, metadata: dict) -> Path:
    header = {"format": checkpoints.FORMAT, "kind": checkpoints.KIND_MODEL,
              checkpoints.METADATA_KEY: json.dumps(metadata)}
    save_file(build_model(SMALL, num_classes=3).state_dict(), str(path), metadata=header)
    return path


FORGED = {
    "input size too big": (dict(input_size=100_000), "above the 1,024 pixels"),
    "input size that does not fit": (dict(input_size=64), "cannot take 64x64"),
    "store size huge": (dict(store_size=1_000_000), "store_size is 1000000"),
    "store size text": (dict(store_size="32"), "store_size is '32'"),
    "channels disagree": (dict(in_channels=1), "preprocess.in_channels is 1"),
}


@pytest.mark.parametrize("case", FORGED)
def test_forged_sizes_get_one_sentence_in_the_library_the_predictor_and_the_app(tmp_path, case):
    overrides, words = FORGED[case]
    path = forged(tmp_path / "forged.safetensors", meta(**overrides))
    for load in (read_metadata, load_model, predict.get_predictor):
        with pytest.raises(CheckpointError) as error:
            load(path)
        one_sentence(str(error.value), "forged.safetensors", words)
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    with pytest.raises(gr.Error) as refused:  # the page's toast, the API's AppError
        gradio_app.predict_image(str(photo), str(path))
    assert refused.value.message.startswith("forged.safetensors") and words in refused.value.message
    assert checkpoints.list_checkpoints(tmp_path) == []  # and listings leave it out


def test_a_checkpoint_that_names_only_what_the_network_needs_still_predicts(tmp_path):
    minimal = meta()
    del minimal["preprocess"]["store_size"], minimal["preprocess"]["in_channels"]
    path = forged(tmp_path / "minimal.safetensors", minimal)
    prediction = predict.get_predictor(path).predict(class_image(0, 40, np.random.default_rng(0)), k=3)
    assert len(prediction.top) == 3 and prediction.network_input.shape == (3, 32, 32)


# --- headers that lie --------------------------------------------------------------------------------------------


def _raw(header: dict | bytes, body: bytes = b"", length: int | None = None) -> bytes:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(encoded) if length is None else length) + encoded + body


LIARS = {
    "header longer than the file": _raw({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                                        length=2**62),
    "header not JSON": _raw(b"\x00\xff not json at all"),
    "tensor past the end": _raw({"__metadata__": {"format": checkpoints.FORMAT, checkpoints.METADATA_KEY: "{}"},
                                 "w": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}},
                                b"\x00" * 16),
    "shape and size disagree": _raw({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 8]}},
                                    b"\x00" * 8),
    "eight bytes": struct.pack("<Q", 0),
}


@pytest.mark.parametrize("case", LIARS)
def test_safetensors_headers_that_lie_get_one_sentence(tmp_path, case):
    path = tmp_path / "liar.safetensors"
    path.write_bytes(LIARS[case])
    for load in (read_metadata, load_model, predict.get_predictor, checkpoints.load_user_weights):
        with pytest.raises(CheckpointError) as error:
            load(path)
        one_sentence(str(error.value), "liar.safetensors")


# --- kill -9 of a real training run --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX kill -9")
def test_kill_9_of_a_training_run_leaves_a_loadable_best_and_a_resumable_last(tmp_path):
    folder = make_image_folder(tmp_path / "data", ["red", "green"], n_per_class=16, size=32)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alexnet_core", "train", "--model", SMALL, "--data", str(folder), "--epochs", "500",
         "--batch-size", "8", "--device", "cpu", "--out", str(out)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        # Every epoch rewrites both files; kill once a few epochs are in, whatever it is doing then.
        while not ((out / "last.safetensors").exists()
                   and checkpoints.read_train_extra(out / "last.safetensors")["epoch"] >= 3):
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not get going"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    model, best = load_model(out / "best.safetensors")
    assert best["epochs"] >= 1 and best["best_val_acc"] is not None
    epoch = checkpoints.read_train_extra(out / "last.safetensors")["epoch"]
    end = train(TrainConfig(resume=str(out), epochs=epoch + 1, device="cpu"))
    assert end.status == "finished", end.message
    assert checkpoints.read_train_extra(out / "last.safetensors")["epoch"] == epoch + 1
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {"best.safetensors", "last.safetensors"}
