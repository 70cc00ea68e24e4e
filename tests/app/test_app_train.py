"""The Train tab's handlers and the background runner behind them (no browser: see tests/e2e/test_browser.py)."""

import asyncio
import time
from pathlib import Path

import gradio as gr
import pytest

import ui.choices
import ui.settings
import ui.train
import ui.train_form
import ui.visitors
from alexnet_core.caps import SharingLimits, TrainingCaps
from alexnet_core.config import TrainConfig
from alexnet_core.runner import RUNNER, BusyError, RunRegistry, ServerBusyError, TrainingRunner
from tests.helpers import make_image_folder, wait_for


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-train")
    make_image_folder(root, ["red", "green", "blue"], n_per_class=40, size=32, splits=("train", "val"))
    return root


@pytest.fixture(autouse=True)
def app_home(tmp_path, monkeypatch):
    monkeypatch.setattr(ui.settings, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(ui.settings, "UPLOADS_DIR", tmp_path / "uploads")
    monkeypatch.setattr(ui.settings, "VISITORS_DIR", tmp_path / "visitors")
    yield
    RUNNER.stop_all()
    RUNNER.wait_all(60)




def settings(folder, **overrides):
    values = dict(model="alexnet_cifar_small", data=str(folder), device="cpu", limit=None, epochs=2, batch_size=16,
                  lr=0.02, optimizer="sgd", momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                  label_smoothing=0.0, batch_norm=False)
    values.update(overrides)
    return values


def test_start_runs_in_background_and_reports(folder):
    message = ui.train.start_training(settings(folder))
    assert message.startswith("Started")
    assert wait_for(lambda: RUNNER.snapshot().status == "finished"), RUNNER.snapshot().message
    text, loss, accuracy, download = ui.train.training_status()
    assert "Finished" in text and "Best validation accuracy" in text
    assert str(ui.settings.RUNS_DIR) not in text  # no server path shown
    # the download is the best checkpoint, handed over from Gradio's upload folder (ui.room.download_copy)
    assert Path(download).read_bytes() == Path(RUNNER.snapshot().best_path).read_bytes()
    assert len(loss[loss.curve == "train (per step)"]) == RUNNER.snapshot().total_steps
    assert list(accuracy.epoch.unique()) == [1, 2]
    # the finished run's checkpoint is where the app lists runs
    assert list(ui.settings.RUNS_DIR.glob("*/best.safetensors"))


def test_second_start_is_refused_and_stop_ends_the_run(folder):
    assert ui.train.start_training(settings(folder, epochs=200)).startswith("Started")
    assert wait_for(lambda: RUNNER.snapshot().step > 0)
    with pytest.raises(gr.Error, match="already going"):
        ui.train.start_training(settings(folder))
    asked = time.time()
    assert ui.train.stop_training().startswith("Stopping")
    assert wait_for(lambda: RUNNER.snapshot().status == "stopped", timeout=10)
    assert time.time() - asked < 5
    assert RUNNER.snapshot().best_path                      # the best checkpoint is kept
    assert ui.train.stop_training() == "No run of yours is going."


@pytest.mark.parametrize("overrides, words", [
    (dict(lr=-1), "Learning rate"), (dict(epochs=0), "Epochs"), (dict(batch_size=1), "Batch size"),
    (dict(data="/no/such/folder"), "folder"),
])
def test_bad_settings_get_a_sentence(folder, overrides, words):
    # Every refused setting is a gr.Error (a toast on the page, AppError for the API); a missing data folder
    # too is refused at the start: the memory check counts the images before any work.
    with pytest.raises(gr.Error) as error:
        ui.train.start_training(settings(folder, **overrides))
    message = error.value.message
    assert words.lower() in message.lower(), message
    assert not RUNNER.snapshot().active


def test_whitened_conv1_reaches_the_run(folder):
    started = ui.train.start_training(settings(folder, model="alexnet_cifar_hires", whiten=True, epochs=1))
    assert started.startswith("Started")
    assert wait_for(lambda: RUNNER.snapshot().status == "finished", timeout=60), RUNNER.snapshot().message
    from alexnet_core import checkpoints
    assert checkpoints.read_metadata(RUNNER.snapshot().best_path)["config"]["whiten"] is True


def test_recipes_fill_the_fields():
    values = dict(zip([s.name for s in ui.train_form.FORM_SETTINGS], ui.train_form.recipe_values("paper")))
    assert values["lr"] == 0.01 and values["schedule"] == "plateau" and values["weight_decay"] == 5e-4
    assert values["nesterov"] is False and values["pca_lighting"] == 0.1 and values["tta"] == "none"
    assert isinstance(values["model"], dict) and isinstance(values["epochs"], dict)   # left as they are


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
    train_data, evaluate_data, note = ui.train.upload_dataset(archive)
    assert "3 classes" in note
    assert any("Uploaded: colours" in label for label, _ in ui.choices.data_choices())
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(gr.Error, match="bad.zip is not a readable zip file"):
        ui.train.upload_dataset(str(bad))


# --- many visitors at once --------------------------------------------------------------------------------

A, B = "a" * 32, "b" * 32


def drain(generator):
    """Runs an async generator handler to its end, as Gradio's queue would; returns everything it yielded."""
    async def collect():
        return [item async for item in generator]
    return asyncio.run(collect())


def test_each_visitor_sees_and_stops_only_their_own_run(folder):
    assert ui.train.start_training(settings(folder, epochs=200), visitor=A).startswith("Started")
    assert wait_for(lambda: RUNNER.snapshot(A).step > 0)
    assert RUNNER.snapshot(B).status == "idle"
    assert ui.train.training_status(B)[0].startswith("No run yet")
    assert ui.train.stop_training(B) == "No run of yours is going."      # B's Stop does not touch A's run
    assert RUNNER.snapshot(A).active
    # One run at a time on this server: B's start waits (the queued event keeps trying), or is refused here.
    with pytest.raises(gr.Error, match="at a time"):
        ui.train.start_training(settings(folder), visitor=B)
    assert ui.train.stop_training(A).startswith("Stopping")
    assert RUNNER.wait(30, A) and RUNNER.snapshot(A).status == "stopped"
    # A's run is in A's folder and lists, not in B's nor in the server's runs/.
    best = RUNNER.snapshot(A).best_path
    assert best.startswith(str(ui.visitors.visitor_folder(A)))
    assert best in dict(map(reversed, ui.choices.checkpoint_choices(A)))
    assert best not in dict(map(reversed, ui.choices.checkpoint_choices(B)))
    assert not ui.settings.RUNS_DIR.exists()


def test_the_train_event_streams_the_run_to_its_end_and_hands_over_the_checkpoint(folder):
    outputs = drain(ui.train.train(settings(folder, epochs=2), visitor=A))
    assert outputs[0][0].startswith("**")
    text, loss, accuracy, download = outputs[-1]
    assert text.startswith("**Finished**")
    assert Path(download).name == f"{Path(RUNNER.snapshot(A).run_dir).name}-best.safetensors"
    assert Path(download).read_bytes() == Path(RUNNER.snapshot(A).best_path).read_bytes()
    assert loss.dtypes["loss"] == "float64" and loss.dtypes["step"] == "int64" and len(loss)
    # The stream ends with the run: a finished run's page follows nothing more.
    assert len(drain(ui.train.follow_training(A))) == 1


def test_a_second_start_waits_for_a_place_and_is_told_where_it_is_in_line(folder, monkeypatch):
    monkeypatch.setattr(ui.train, "FOLLOW_SECONDS", 0.05)
    assert ui.train.start_training(settings(folder, epochs=200), visitor=A).startswith("Started")
    assert "number 1 in line" in ui.train.queue_notice(B)
    with pytest.raises(gr.Error, match="already going"):
        ui.train.queue_notice(A)

    async def first_outputs():
        stream = ui.train.train(settings(folder, epochs=1), visitor=B)
        waiting = await anext(stream)
        RUNNER.stop(A)
        rest = [item async for item in stream]
        return waiting, rest
    waiting, rest = asyncio.run(first_outputs())
    assert waiting[0].startswith("⏳ Another visitor's run is training") and "number 1 in line" in waiting[0]
    assert rest[-1][0].startswith("**Finished**"), rest[-1][0]     # B's run started once A's had ended


def test_typed_empty_plots_before_any_run():
    text, loss, accuracy, download = ui.train.training_status("c" * 32)
    assert text.startswith("No run yet") and download is None
    # No values yet, but every curve named (one NaN row each, which the chart leaves out): Gradio's LinePlot
    # keeps the colours of the curves in its first data, so a curve missing then would never be drawn.
    assert loss["loss"].isna().all() and accuracy["accuracy"].isna().all()
    assert sorted(loss["curve"]) == ["train (per step)", "validation"]
    assert sorted(accuracy["curve"]) == ["train", "validation"]
    assert str(loss.dtypes["loss"]) == "float64" and str(accuracy.dtypes["accuracy"]) == "float64"


def test_the_registry_bounds_runs_at_once(folder, tmp_path):
    registry = RunRegistry(max_active=1)
    config = TrainConfig(model="alexnet_cifar_small", data=str(folder), epochs=50, batch_size=16, device="cpu",
                         out=str(tmp_path / "a"))
    registry.start(config, "a")
    with pytest.raises(BusyError):
        registry.start(config, "a")
    with pytest.raises(ServerBusyError):
        registry.start(config, "b")
    assert not registry.stop("b") and registry.snapshot("b").status == "idle"
    assert registry.stop("a") and registry.wait(30, "a")


def test_runs_per_visitor_are_bounded_and_the_train_tab_says_so(folder, monkeypatch):
    limits = SharingLimits(runs_per_visitor=1, upload_mb_per_visitor=5)
    monkeypatch.setattr(ui.settings, "SHARING", limits)
    assert "1 runs per visitor" in limits.describe() and "5 MB of uploads per visitor" in limits.describe()
    assert ui.train.start_training(settings(folder, epochs=1), visitor=A).startswith("Started")
    assert RUNNER.wait(60, A)
    with pytest.raises(gr.Error, match="as many as this server keeps per visitor"):
        ui.train.start_training(settings(folder, epochs=1), visitor=A)
    assert ui.train.start_training(settings(folder, epochs=1), visitor=B).startswith("Started")


def test_sharing_limits_from_the_environment():
    assert SharingLimits.from_env({}) == SharingLimits()
    space = SharingLimits.from_env({"SPACE_ID": "x/y"})
    assert space.runs_at_once == 1 and space.runs_per_visitor == 5 and space.upload_mb_per_server == 20 * 1024
    assert SharingLimits.from_env({"ALEXNET_STUDIO_RUNS_AT_ONCE": "3"}).runs_at_once == 3
    with pytest.raises(ValueError, match="ALEXNET_STUDIO_MAX_RUNS_PER_VISITOR"):
        SharingLimits.from_env({"ALEXNET_STUDIO_MAX_RUNS_PER_VISITOR": "-1"})


def test_a_visitor_keeps_their_id_across_reloads_and_a_forged_one_is_replaced():
    first, kept = ui.visitors.remember_visitor(None)
    assert first == kept and len(first) == 32
    assert ui.visitors.remember_visitor(first) == (first, first)
    assert ui.visitors.remember_visitor("../../etc")[0] != "../../etc"


def test_run_messages_name_files_not_server_paths_and_give_no_command_line_advice(monkeypatch, tmp_path):
    uploads = ui.visitors.visitor_folder(A) / "uploads" / "flowers-20261204" / "flowers"
    page = ui.visitors.for_the_page(f"Training stopped because the data could not be read: {uploads} has no class "
                                   f"folders. The best checkpoint so far is kept.")
    assert str(ui.settings.VISITORS_DIR) not in page and "flowers has no class folders" in page
    stopped = ui.visitors.for_the_page("Stopped. The best checkpoint is kept; --resume continues the run.")
    assert "--resume" not in stopped and stopped.endswith("download it below, or use it in Predict, Evaluate and "
                                                          "Inside.")


def test_a_cap_that_cuts_the_images_warns_and_the_run_goes_on(folder, monkeypatch):
    import warnings

    monkeypatch.setattr(ui.settings, "TRAINING_CAPS", TrainingCaps(images=20))
    with warnings.catch_warnings(record=True) as caught:  # gr.Warning outside a request: a Python warning
        warnings.simplefilter("always")
        assert ui.train.start_training(settings(folder, epochs=1), visitor=A).startswith("Started")
    assert any("at most 20 images per split: your run uses 20 of its 120 training images and 20 of its 120 "
               "validation images" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert RUNNER.wait(60, A) and RUNNER.snapshot(A).status == "finished"
