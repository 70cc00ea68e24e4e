"""The Train tab's handlers and the background runner behind them (no browser: see test_browser.py)."""

import time

import pytest

import gradio_app
from alexnet_core.runner import RUNNER, BusyError, TrainingRunner
from alexnet_core.config import TrainConfig
from tests.helpers import make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-train")
    make_image_folder(root, ["red", "green", "blue"], n_per_class=40, size=32, splits=("train", "val"))
    return root


@pytest.fixture(autouse=True)
def app_home(tmp_path, monkeypatch):
    monkeypatch.setattr(gradio_app, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(gradio_app, "UPLOADS_DIR", tmp_path / "uploads")
    yield
    RUNNER.stop()
    RUNNER.wait(60)


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def settings(folder, **overrides):
    values = dict(model="alexnet_cifar_small", data=str(folder), device="cpu", limit=None, epochs=2, batch_size=16,
                  lr=0.02, optimizer="sgd", momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                  label_smoothing=0.0, batch_norm=False)
    values.update(overrides)
    return values


def test_start_runs_in_background_and_reports(folder):
    message = gradio_app.start_training(**settings(folder))
    assert message.startswith("Started")
    assert wait_for(lambda: RUNNER.snapshot().status == "finished"), RUNNER.snapshot().message
    text, loss, accuracy = gradio_app.training_status()
    assert "Finished" in text and "Best validation accuracy" in text
    assert len(loss[loss.curve == "train (per step)"]) == RUNNER.snapshot().total_steps
    assert list(accuracy.epoch.unique()) == [1, 2]
    # the finished run's checkpoint is where the app lists runs
    assert list(gradio_app.RUNS_DIR.glob("*/best.safetensors"))


def test_second_start_is_refused_and_stop_ends_the_run(folder):
    assert gradio_app.start_training(**settings(folder, epochs=200)).startswith("Started")
    assert wait_for(lambda: RUNNER.snapshot().step > 0)
    refused = gradio_app.start_training(**settings(folder))
    assert "already going" in refused
    asked = time.time()
    assert gradio_app.stop_training().startswith("Stopping")
    assert wait_for(lambda: RUNNER.snapshot().status == "stopped", timeout=10)
    assert time.time() - asked < 5
    assert RUNNER.snapshot().best_path                      # the best checkpoint is kept
    assert gradio_app.stop_training() == "No run is going."


@pytest.mark.parametrize("overrides, words", [
    (dict(lr=-1), "Learning rate"), (dict(epochs=0), "Epochs"), (dict(batch_size=1), "Batch size"),
    (dict(data="/no/such/folder"), "folder"),
])
def test_bad_settings_get_a_sentence(folder, overrides, words):
    message = gradio_app.start_training(**settings(folder, **overrides))
    # A missing data folder too is refused at the start: the memory check counts the images before any work.
    assert message.startswith("⚠️") and words.lower() in message.lower(), message
    assert not RUNNER.snapshot().active


def test_whitened_conv1_reaches_the_run(folder):
    assert gradio_app.start_training(**settings(folder, model="alexnet_cifar_hires", whiten=True, epochs=1)).startswith("Started")
    assert wait_for(lambda: RUNNER.snapshot().status == "finished", timeout=60), RUNNER.snapshot().message
    from alexnet_core import checkpoints
    assert checkpoints.read_metadata(RUNNER.snapshot().best_path)["config"]["whiten"] is True


def test_recipes_fill_the_fields():
    values = dict(zip(gradio_app.HYPER_FIELDS, gradio_app.recipe_values("paper")))
    assert values["lr"] == 0.01 and values["schedule"] == "plateau" and values["weight_decay"] == 5e-4


def test_runner_refuses_a_second_run_directly(folder, tmp_path):
    runner = TrainingRunner()
    config = TrainConfig(model="alexnet_cifar_small", data=str(folder), epochs=50, batch_size=16, device="cpu",
                         out=str(tmp_path / "r"))
    runner.start(config)
    with pytest.raises(BusyError):
        runner.start(config)
    runner.stop()
    assert runner.wait(30) and runner.snapshot().status == "stopped"


def test_upload_zip_becomes_a_data_choice(folder, tmp_path):
    import shutil
    archive = shutil.make_archive(str(tmp_path / "colours"), "zip", folder)
    dropdown, note = gradio_app.upload_dataset(archive)
    assert "3 classes" in note
    assert any("Uploaded: colours" in label for label, _ in gradio_app.data_choices())
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    assert "⚠️" in gradio_app.upload_dataset(str(bad))[1]
