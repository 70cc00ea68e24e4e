"""Hardening, checkpoints: no untrusted unpickling anywhere in the code, and forged or damaged checkpoints beyond
those of tests/unit/test_checkpoints.py (sizes that would crash the first forward pass or make every photo decode
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

import gradio as gr
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import gradio_app
import ui.choices
import ui.predict
import ui.settings
from alexnet_core import checkpoints, predict
from alexnet_core.checkpoints import CheckpointError, load_model, read_metadata
from alexnet_core.config import TrainConfig
from alexnet_core.models import build_model
from alexnet_core.train import train
from tests.helpers import assert_one_sentence, class_image, make_image_folder

REPO = Path(__file__).resolve().parents[2]
SMALL = "alexnet_cifar_small"




# --- no untrusted unpickling anywhere -------------------------------------------------------------------------


def _python_files() -> list[Path]:
    return sorted([*REPO.glob("alexnet_core/*.py"), *REPO.glob("*.py"), *REPO.glob("ui/*.py"),
                   *REPO.glob("bench/*.py"), *REPO.glob("docs/*.py")])


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
    assert REPO != Path(__file__).resolve().parents[2] or len(_python_files()) > 15  # it did look at the code


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
        assert_one_sentence(str(error.value), "forged.safetensors", words)
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    with pytest.raises(gr.Error) as refused:  # the page's toast, the API's AppError
        ui.predict.predict_image(str(photo), str(path))
    assert refused.value.message.startswith("forged.safetensors") and words in refused.value.message
    assert checkpoints.list_checkpoints(tmp_path) == []  # and listings leave it out


def test_a_checkpoint_that_names_only_what_the_network_needs_still_predicts(tmp_path):
    minimal = meta()
    del minimal["preprocess"]["store_size"], minimal["preprocess"]["in_channels"]
    path = forged(tmp_path / "minimal.safetensors", minimal)
    prediction = predict.get_predictor(path).predict(class_image(0, 40, np.random.default_rng(0)), top_k=3)
    assert len(prediction.top_k) == 3 and prediction.network_input.shape == (3, 32, 32)


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
        assert_one_sentence(str(error.value), "liar.safetensors")


# --- checkpoints that lie about their model: refused before they cost anything -------------------------------

PEAK_RSS_LIMIT_KB = 2.5 * 2**20  # 2.5 GB, in ru_maxrss's kilobytes (Linux)


def nested(depth: int) -> str:
    """Valid metadata with a history nested ``depth`` lists deep (json.dumps itself could not write it)."""
    return json.dumps(meta())[:-1] + ', "history": ' + "[" * depth + "]" * depth + "}"


def lying(path: Path, meta_json: str) -> Path:
    """A real 3-class alexnet_cifar_small's tensors under whatever metadata the case writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": checkpoints.FORMAT, "kind": checkpoints.KIND_MODEL, checkpoints.METADATA_KEY: meta_json}
    save_file(build_model(SMALL, num_classes=3).state_dict(), str(path), metadata=header)
    return path


# case: (the metadata's JSON, words the sentence must hold, whether only the tensors show the lie)
LYING = {
    "3,000,000 classes": (json.dumps(meta() | {"num_classes": 3_000_000}),
                          "num_classes is 3,000,000, more than the 100,000", False),
    # 3,000,000 empty names: a 9 MB header, under the 16 MiB bound, so that the class bound is what refuses it.
    "3,000,000 classes, each named": (
        json.dumps(meta() | {"num_classes": 3_000_000, "classes": [""] * 3_000_000}, separators=(",", ":")),
        "num_classes is 3,000,000, more than the 100,000", False),
    "50,000 classes over a 3-class file": (
        json.dumps(meta() | {"num_classes": 50_000, "classes": [f"c{i}" for i in range(50_000)]}),
        "its classifier.fc5.weight is 3x192 but alexnet_cifar_small builds 50000x192", True),
    "100,000 input channels": (json.dumps(meta() | {"in_channels": 100_000}), "in_channels is 100,000, not 1 or 3",
                               False),
    "nested 100,000 deep": (nested(100_000), "nested more than 32 levels deep", False),
    "nested 500 deep": (nested(500), "nested more than 32 levels deep", False),
    "NaN mean": (json.dumps(meta(mean=[0.5, float("nan"), 0.5])), "preprocess.mean has a value that is not a finite",
                 False),
    "infinite std": (json.dumps(meta(std=[0.25, 0.25, float("inf")])),
                     "preprocess.std has a value that is not a finite", False),
    "-infinite mean": (json.dumps(meta(mean=[float("-inf")] * 3)), "preprocess.mean has a value that is not a finite",
                       False),
    "zero std": (json.dumps(meta(std=[0.25, 0.0, 0.25])), "preprocess.std has a value that is not positive", False),
    # Finite in JSON, not in float32 (issue 24): every confidence was NaN, and the page still named a class.
    "std 1e-46": (json.dumps(meta(std=[1e-46] * 3)), "preprocess.std has a value below 0.001", False),
    "std 1e-300": (json.dumps(meta(std=[0.25, 1e-300, 0.25])), "preprocess.std has a value below 0.001", False),
    "mean 1e308": (json.dumps(meta(mean=[1e308] * 3)), "preprocess.mean has a value that is not a finite number from",
                   False),
    # Python reads no integer of more than 4,300 digits: its own ValueError said "Exceeds the limit (4300 digits)".
    "a 5,000-digit integer": (json.dumps(meta())[:-1] + ', "epochs": ' + "9" * 5000 + "}",
                              "a number thousands of digits long", False),
}


@pytest.mark.parametrize("case", LYING)
def test_a_lying_checkpoint_is_refused_before_any_model_is_built(tmp_path, case, monkeypatch):
    meta_json, words, only_the_tensors_tell = LYING[case]
    path = lying(tmp_path / "liar.safetensors", meta_json)
    built = []   # every model the loader builds, and on which device: only shapes (meta) before the check passes

    def recording_build(*args, **kwargs):
        built.append((args, torch.get_default_device().type))
        return build_model(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "build_model", recording_build)
    loaders = (load_model, predict.get_predictor) if only_the_tensors_tell else (read_metadata, load_model,
                                                                                  predict.get_predictor)
    for load in loaders:
        with pytest.raises(CheckpointError) as error:
            load(path)
        assert_one_sentence(str(error.value), "liar.safetensors", words)
    assert all(device == "meta" for _, device in built), built
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    with pytest.raises(gr.Error) as refused:  # the app's toast, AppError for an API client
        ui.predict.predict_image(str(photo), str(path))
    assert_one_sentence(refused.value.message, "liar.safetensors", words)


def test_metadata_nested_32_levels_is_read_and_33_refused(tmp_path):
    # The metadata object is level 1, so a history 31 lists deep reaches level 32.
    assert read_metadata(lying(tmp_path / "deep.safetensors", nested(31)))["model"] == SMALL
    with pytest.raises(CheckpointError, match="nested more than 32 levels deep"):
        read_metadata(lying(tmp_path / "deeper.safetensors", nested(32)))


def test_a_header_too_big_for_any_checkpoint_is_refused_unread(tmp_path):
    path = tmp_path / "huge.safetensors"
    length = checkpoints.MAX_HEADER_BYTES + 1
    path.write_bytes(struct.pack("<Q", length) + b"{" + b" " * (length - 1))
    for load in (read_metadata, load_model, predict.get_predictor):
        with pytest.raises(CheckpointError) as error:
            load(path)
        assert_one_sentence(str(error.value), "huge.safetensors", "more than the 16 MiB")
    assert checkpoints.list_checkpoints(tmp_path) == []


# Runs one command line in a child and reports the child's peak resident memory (kB) as the last line of stderr,
# so that the test process itself allocates nothing and other tests' children do not count.
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")

# The lies that could cost memory, each through one command in a process of its own (every lie goes through
# every command in-process above): predict, evaluate and card all load the checkpoint through load_model.
CLI_CASES = {
    "3,000,000 classes": "predict", "3,000,000 classes, each named": "evaluate",
    "50,000 classes over a 3-class file": "card", "nested 100,000 deep": "predict", "100,000 input channels": "card",
}


def cli_args(command: str, tmp_path: Path) -> list[str]:
    """What ``command`` needs besides --checkpoint: a photo, or a small labelled test folder."""
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    data = make_image_folder(tmp_path / "data", ["a", "b", "c"], n_per_class=2, size=32, splits=("test",))
    return {"predict": [str(photo)], "evaluate": ["--data", str(data), "--device", "cpu"],
            "card": ["--data", str(data), "--out", str(tmp_path / "card"), "--device", "cpu"]}[command]


@pytest.mark.parametrize("case", LYING)
def test_every_lying_checkpoint_is_one_sentence_and_exit_2_from_the_command_line(tmp_path, case, capsys):
    from alexnet_core import cli

    path = lying(tmp_path / "liar.safetensors", LYING[case][0])
    for command in ("predict", "evaluate", "card"):
        assert cli.main([command, "--checkpoint", str(path), *cli_args(command, tmp_path)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: ")
        assert_one_sentence(err.strip(), "liar.safetensors", LYING[case][1])


@pytest.mark.parametrize("case", CLI_CASES)
def test_the_command_line_refuses_a_lying_checkpoint_in_one_sentence_and_little_memory(tmp_path, case):
    """A separate process, as a user runs it: its peak memory is measured, and nothing it does can hide a
    traceback."""
    meta_json, words, _ = LYING[case]
    path = lying(tmp_path / "liar.safetensors", meta_json)
    command = CLI_CASES[case]
    args = cli_args(command, tmp_path)
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "alexnet_core", command,
                             "--checkpoint", str(path), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    *message, peak_kb = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(message) == 1 and message[0].startswith("error: "), message
    assert_one_sentence(message[0], "liar.safetensors", words)
    assert result.stdout == ""
    assert int(peak_kb) < PEAK_RSS_LIMIT_KB, f"{command} peaked at {int(peak_kb) / 2**20:.2f} GB"


def test_the_app_starts_and_lists_the_others_with_lying_checkpoints_in_its_runs_folder(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "good").mkdir(parents=True)
    good = forged(runs / "good" / "best.safetensors", meta())
    for case in ("nested 100,000 deep", "3,000,000 classes, each named", "NaN mean", "100,000 input channels",
                 "a 5,000-digit integer", "std 1e-46"):
        lying(runs / case.replace(",", "").replace(" ", "_") / "best.safetensors", LYING[case][0])
    shape_liar = lying(runs / "shape_liar" / "best.safetensors", LYING["50,000 classes over a 3-class file"][0])
    monkeypatch.setattr(ui.settings, "RUNS_DIR", runs)
    monkeypatch.chdir(tmp_path)              # ./runs is this folder's runs too: each file listed once

    listed = {Path(path) for _, path in ui.choices.checkpoint_choices() if Path(path).is_relative_to(runs)}
    # Metadata that cannot be true is left out; a file whose tensors alone tell the lie (read only when it is
    # loaded) is listed, and choosing it gets one sentence.
    assert listed == {good, shape_liar}
    gradio_app.build_app()                   # the app starts: every dropdown lists its checkpoints
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    with pytest.raises(gr.Error) as refused:
        ui.predict.predict_image(str(photo), str(shape_liar))
    assert refused.value.message.startswith("best.safetensors does not fit alexnet_cifar_small"), refused.value.message
    label, _, _ = ui.predict.predict_image(str(photo), str(good))
    assert label is not None


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
    # given: epochs is an override even where it equals TrainConfig's default (10), which alone cannot tell
    end = train(TrainConfig(resume=str(out), epochs=epoch + 1, device="cpu"), given={"epochs", "device"})
    assert end.status == "finished", end.message
    assert checkpoints.read_train_extra(out / "last.safetensors")["epoch"] == epoch + 1
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {"best.safetensors", "last.safetensors",
                                                                             "snapshots"}
    # and the snapshots (issue 27) are whole files too, no temporary one left by the kill
    assert all(p.name == "images.safetensors" or p.stem.isdigit() for p in (out / "snapshots").iterdir())
