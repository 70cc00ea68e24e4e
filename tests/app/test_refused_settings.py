"""Hardening, settings: epochs, batch size, learning rate, k and input size out of range or of the wrong type get a
clear message before any work starts, in the UI (the handlers the page calls), the API (the live app through
gradio_client) and the command line alike.

Where a form field has bounds, Gradio checks them first and answers with the value and the bound ("Value 0 is
less than minimum value 1."); everything else reaches alexnet_core, whose sentence names the setting.
"""

from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

import ui.architecture
import ui.predict
import ui.settings
import ui.train
from alexnet_core import cli
from alexnet_core.runner import RUNNER
from tests.helpers import assert_one_sentence, class_image, make_image_folder

REPO = Path(__file__).resolve().parents[2]
TRAIN_DEFAULTS = dict(model="alexnet_cifar_small", device="cpu", limit=None, epochs=2, batch_size=16, lr=0.02,
                      optimizer="sgd", momentum=0.9, weight_decay=5e-4, schedule="onecycle", label_smoothing=0.0,
                      batch_norm=False)
# (setting, bad value, what the message must say)
BAD_TRAINING = [
    ("epochs", 0, "Epochs"), ("epochs", 1001, "Epochs"), ("epochs", 2.5, "Epochs"), ("epochs", None, "Epochs"),
    ("epochs", "ten", "Epochs"), ("epochs", math.nan, "Epochs"), ("epochs", True, "Epochs"),
    ("batch_size", 1, "Batch size"), ("batch_size", 9000, "Batch size"), ("batch_size", "x", "Batch size"),
    ("batch_size", None, "Batch size"),
    ("lr", 0, "Learning rate"), ("lr", -1, "Learning rate"), ("lr", 11, "Learning rate"),
    ("lr", math.nan, "Learning rate"), ("lr", math.inf, "Learning rate"), ("lr", "fast", "Learning rate"),
    ("lr", None, "Learning rate"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("settings"), ["red", "green"], n_per_class=8, size=32)


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(ui.settings, "RUNS_DIR", tmp_path / "runs")
    yield tmp_path / "runs"
    RUNNER.stop()
    RUNNER.wait(60)


def no_work_started(runs: Path) -> None:
    assert not RUNNER.snapshot().active
    assert not runs.exists() or not any(runs.iterdir())




# --- the UI: the handlers the page calls ------------------------------------------------------------------


@pytest.mark.parametrize("setting, value, words", BAD_TRAINING)
def test_the_train_tab_refuses_a_bad_setting_before_any_work(folder, runs, setting, value, words):
    with pytest.raises(gr.Error) as refused:  # a toast on the page, AppError with the sentence for the API
        ui.train.start_training({**TRAIN_DEFAULTS, "data": str(folder), setting: value})
    assert_one_sentence(refused.value.message, words)
    no_work_started(runs)


def test_the_train_tab_refuses_a_batch_too_large_for_the_memory_and_names_the_largest_that_fits(folder, runs,
                                                                                                  monkeypatch):
    from alexnet_core import memory
    from alexnet_core.config import TrainConfig, check_memory

    settings = {**TRAIN_DEFAULTS, "model": "alexnet", "data": str(folder), "batch_size": 8192}
    monkeypatch.setenv(memory.BUDGET_ENV, "1T")
    est = check_memory(TrainConfig(**{k: v for k, v in settings.items() if k != "batch_size"}, batch_size=16))
    monkeypatch.setenv(memory.BUDGET_ENV, str(est.total(5)))    # this server has room for batches of 5
    with pytest.raises(gr.Error) as refused:   # the page's toast, AppError for an API client
        ui.train.start_training(settings)
    assert_one_sentence(refused.value.message, "alexnet", "the largest batch that fits is 5.")
    no_work_started(runs)


@pytest.mark.parametrize("k", [0, -1, 1001, 2.5, "five", math.nan, True])
def test_the_predict_tab_refuses_a_bad_k(k, tmp_path):
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    with pytest.raises(gr.Error) as refused:
        ui.predict.predict_image(str(photo), str(ui.settings.DEFAULT_CHECKPOINT), k)
    assert_one_sentence(refused.value.message, "top classes (k)", "whole number from 1 to 1000")


@pytest.mark.parametrize("size", [0, -3, 2.5, 5000, "big", math.nan, True, 2])
def test_the_architecture_tab_says_why_an_input_size_cannot_be_used(size):
    custom = ui.architecture.architecture("alexnet", size, False)[5]
    assert "⚠️" in custom and "227×227" in custom  # the sentence, and the plot falls back to the variant's size
    assert_one_sentence(custom.split("⚠️", 1)[1], "input")


# --- the API: the live app -------------------------------------------------------------------------------


def _call(client, *args, api_name: str) -> str:
    """The endpoint's answer as text: the returned message, or the error Gradio raised before the handler."""
    from gradio_client.exceptions import AppError

    try:
        result = client.predict(*args, api_name=api_name)
    except AppError as error:
        return str(error)
    if isinstance(result, str):
        return result
    texts = [r for r in result if isinstance(r, str)]
    custom = [t for t in texts if t.startswith("#### Custom size")]  # /summary: the custom size's part
    return (custom[0].split("\n\n", 1)[1] if custom else " ".join(texts)).strip()


# What JSON can carry (no NaN or infinity): /train takes one settings object, whose values the handler checks.
API_TRAINING = [(s, v, w) for s, v, w in BAD_TRAINING if not (isinstance(v, float) and not math.isfinite(v))]
API_TRAINING += [("limit", "many", "Images per split"), ("batch_norm", "yes", "BatchNorm"),
                 ("out", "/tmp/elsewhere", "folder on the server"), ("resume", "/etc", "folder on the server"),
                 ("colour", 3, "no setting 'colour'")]


def test_the_api_refuses_bad_training_settings_before_any_work(live_app):
    from gradio_client import Client

    client = Client(live_app.url, verbose=False)
    runs = sorted(p for p in live_app.home.rglob("*") if p.is_dir())
    for setting, value, words in API_TRAINING:
        asked = {**TRAIN_DEFAULTS, "data": str(live_app.tiny_data), setting: value}
        answer = _call(client, asked, api_name="/train")
        assert_one_sentence(answer, words)   # the handler's gr.Error: AppError with its sentence
        assert not RUNNER.snapshot().active, (setting, value, answer)
    assert sorted(p for p in live_app.home.rglob("*") if p.is_dir()) == runs


def test_the_api_refuses_a_bad_k_and_input_size(live_app, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(live_app.url, verbose=False)
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    checkpoint = str(ui.settings.DEFAULT_CHECKPOINT)
    for k, words in ((0, "minimum value 1"), (11, "maximum value 10"), (2.5, "whole number from 1 to 1000")):
        assert_one_sentence(_call(client, handle_file(str(photo)), checkpoint, k, api_name="/predict"), words)
    for size, words in ((0, "minimum value 1"), (5000, "maximum value 1024"), (3, "cannot take 3x3")):
        assert_one_sentence(_call(client, "alexnet", size, "off", api_name="/summary"), words)


def test_the_api_names_the_setting_when_a_number_comes_as_text(live_app, tmp_path):
    """Gradio's Number and Slider would compare the text with their bounds and fail with a generic error before
    any handler runs; ui/fields.py names the field instead, in every tab."""
    from gradio_client import Client, handle_file

    client = Client(live_app.url, verbose=False)
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    calls = [
        ((handle_file(str(photo)), str(ui.settings.DEFAULT_CHECKPOINT), "five"), "/predict", "Top classes", "five"),
        (("alexnet", "big", "off"), "/summary", "Custom size", "big"),
        ((str(ui.settings.DEFAULT_CHECKPOINT), str(live_app.tiny_data), "test", "all"), "/evaluate", "Images", "all"),
    ]
    for args, api_name, field, text in calls:
        answer = _call(client, *args, api_name=api_name)
        assert answer.startswith(f"{field} must be a number, not '{text}'"), (api_name, answer)
        assert_one_sentence(answer, field.lower())
    # Text that reads as a number is that number (the API's clients may send "2" for 2).
    assert "Custom size 36×36" in client.predict("alexnet_cifar", "36", "off", api_name="/summary")[5]
    assert RUNNER.active_count() == 0  # nothing was started


# --- the command line ---------------------------------------------------------------------------------------


CLI_TRAINING = [
    (["--epochs", "0"], "Epochs"), (["--epochs", "1001"], "Epochs"), (["--batch-size", "1"], "Batch size"),
    (["--batch-size", "9000"], "Batch size"), (["--lr", "0"], "Learning rate"), (["--lr", "nan"], "Learning rate"),
    (["--lr", "-0.1"], "Learning rate"), (["--input-size", "4"], "Input size"),
    (["--input-size", "100"], "cannot take 100x100"), (["--seed", "-1"], "seed"),
]


@pytest.mark.parametrize("flags, words", CLI_TRAINING)
def test_the_command_line_refuses_a_bad_setting_before_any_work(folder, tmp_path, capsys, flags, words):
    out = tmp_path / "run"
    code = cli.main(["train", "--model", "alexnet_cifar_small", "--data", str(folder), "--device", "cpu",
                     "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert_one_sentence(err.strip(), words)
    assert not out.exists()


@pytest.mark.parametrize("argv, flag", [
    (["train", "--epochs", "ten"], "--epochs"), (["train", "--batch-size", "2.5"], "--batch-size"),
    (["train", "--lr", "fast"], "--lr"), (["predict", "x.png", "--checkpoint", "c", "--top-k", "five"], "--top-k"),
    (["summary", "--model", "alexnet", "--input-size", "big"], "--input-size"),
])
def test_the_command_line_names_a_flag_of_the_wrong_type(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: invalid" in err and "Traceback" not in err, err


@pytest.mark.parametrize("k", ["0", "1001"])
def test_the_command_line_refuses_a_bad_k(k, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    code = cli.main(["predict", str(photo), "--checkpoint", str(ui.settings.DEFAULT_CHECKPOINT), "--top-k", k])
    captured = capsys.readouterr()
    assert code == 2 and not captured.out
    assert_one_sentence(captured.err.strip(), "top classes (k)", "1 to 1000")


@pytest.mark.parametrize("size, words", [("0", "from 1 to 1024"), ("5000", "from 1 to 1024"),
                                         ("100", "cannot take 100x100")])
def test_the_command_line_summary_refuses_a_bad_input_size(size, words, capsys):
    assert cli.main(["summary", "--model", "alexnet", "--input-size", size]) == 2
    captured = capsys.readouterr()
    assert not captured.out
    assert_one_sentence(captured.err.strip(), words)


def test_the_command_line_refuses_the_paper_net_at_batch_8192_on_the_flowers_before_any_work(flowers_dir, tmp_path,
                                                                                             monkeypatch):
    import json
    import os
    import subprocess
    import sys

    from alexnet_core import memory
    from alexnet_core.config import TrainConfig, check_memory

    argv = ["train", "--model", "alexnet", "--data", str(flowers_dir), "--batch-size", "8192", "--device", "cpu",
            "--out", str(tmp_path / "run")]
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    available = memory.available_bytes("cpu")[0] or 0
    monkeypatch.setenv(memory.BUDGET_ENV, "1T")
    config = TrainConfig(model="alexnet", data=str(flowers_dir), batch_size=8192, device="cpu")
    needed = check_memory(config).total(2934)
    env = {k: v for k, v in os.environ.items() if k != memory.BUDGET_ENV}
    if available >= needed:   # a host that could train it (over 60 GiB free): be the 8 GB one instead
        env[memory.BUDGET_ENV] = "8G"
    # The command runs in a fresh process whose children's peak resident set is then read (the run's alone).
    wrapper = ("import json, resource, subprocess, sys; "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(json.dumps([p.returncode, p.stdout, p.stderr, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "alexnet_core", *argv], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env=env, check=True).stdout
    code, stdout, stderr, max_rss_kib = json.loads(out)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("error: Training alexnet on batches of 2,934"), stderr
    assert_one_sentence(stderr.strip(), "the largest batch that fits is")
    assert not (tmp_path / "run").exists()
    assert max_rss_kib * 1024 < 6 * 2**30, f"peak {max_rss_kib / 2**20:.1f} GiB"
    print(f"refused in a peak resident set of {max_rss_kib / 2**20:.2f} GiB: {stderr.strip()}")
