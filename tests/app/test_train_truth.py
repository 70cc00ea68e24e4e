"""What the Train tab says about runs is so (issue 25, item 3): the images cap is mentioned only when it shortened a
split, a failed or refused run does not count and leaves nothing on disk, a reload shows the run's own settings,
downloads are named after their run, and the other tabs name a run by its name."""

import secrets
import warnings
from pathlib import Path

import gradio as gr
import pytest

import alexnet_core.train
import ui.choices
import ui.predict
import ui.settings
import ui.train
import ui.visitors
from alexnet_core.caps import SharingLimits, TrainingCaps
from alexnet_core.runner import RUNNER
from tests.helpers import make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    make_image_folder(root, ["red", "green", "blue"], n_per_class=16, size=32, splits=("train", "val"))
    return root  # 48 training and 48 validation images


@pytest.fixture(autouse=True)
def app_home(tmp_path, monkeypatch):
    for name, sub in (("RUNS_DIR", "runs"), ("UPLOADS_DIR", "uploads"), ("VISITORS_DIR", "visitors"),
                      ("STUDIO_HOME", "")):
        monkeypatch.setattr(ui.settings, name, tmp_path / sub)
    global A
    A = secrets.token_hex(16)   # a visitor of their own for each test: the registry keeps a visitor's last run
    yield
    RUNNER.stop_all()
    RUNNER.wait_all(60)


def start(folder, visitor=None, **overrides):
    """Start, as the page sends it."""
    visitor = visitor or A
    settings = dict(model="alexnet_cifar_small", data=str(folder), device="cpu", limit=None, epochs=1,
                    batch_size=16, lr=0.02, optimizer="sgd", momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                    label_smoothing=0.0, batch_norm=False)
    settings.update(overrides)
    return ui.train.start_training(settings, visitor=visitor)


def warnings_of(action) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:  # gr.Warning outside a request: a Python warning
        warnings.simplefilter("always")
        action()
    return [str(w.message) for w in caught]


def test_the_images_cap_is_mentioned_only_when_it_shortened_a_split(folder, monkeypatch):
    monkeypatch.setattr(ui.settings, "TRAINING_CAPS", TrainingCaps(images=5000))
    said = warnings_of(lambda: start(folder))     # 48 images a split: the cap of 5,000 shortens nothing
    assert not [s for s in said if "images per split" in s], said
    assert RUNNER.wait(60, A) and RUNNER.snapshot(A).status == "finished"

    monkeypatch.setattr(ui.settings, "TRAINING_CAPS", TrainingCaps(images=20))
    said = warnings_of(lambda: start(folder))
    assert [s for s in said if "20 of its 48 training images and 20 of its 48 validation images" in s], said
    assert RUNNER.wait(60, A) and RUNNER.snapshot(A).status == "finished"


def test_a_failed_run_does_not_count_and_leaves_nothing_on_disk(folder, monkeypatch):
    monkeypatch.setattr(ui.settings, "SHARING", SharingLimits(runs_per_visitor=1))

    def no_internet(*args, **kwargs):
        raise OSError("Could not download the data set: no internet")
    with monkeypatch.context() as patch:
        patch.setattr(alexnet_core.train.data, "load_split", no_internet)
        start(folder)
        assert RUNNER.wait(60, A) and RUNNER.snapshot(A).status == "failed", RUNNER.snapshot(A).message
    assert not list(ui.visitors.runs_dir(A).glob("*")), "the failed run left its folder behind"
    assert ui.visitors.run_count(A) == 0
    start(folder)       # the visitor's one run is still theirs to make
    assert RUNNER.wait(60, A) and RUNNER.snapshot(A).status == "finished"
    assert ui.visitors.run_count(A) == 1


def test_a_refused_run_does_not_count_and_leaves_nothing_on_disk(folder, monkeypatch):
    monkeypatch.setattr(ui.settings, "SHARING", SharingLimits(runs_per_visitor=1))
    for bad in (dict(lr=-1), dict(batch_size=10**6 // 2), dict(epochs=0)):
        with pytest.raises(gr.Error):
            start(folder, **bad)
    assert not ui.visitors.runs_dir(A).exists() and ui.visitors.run_count(A) == 0
    start(folder)
    assert RUNNER.wait(60, A) and RUNNER.snapshot(A).status == "finished"


def test_a_reload_shows_the_settings_of_the_run_it_follows(folder):
    start(folder, epochs=2, lr=0.031, batch_size=12, optimizer="adam", weight_decay=0.0, label_smoothing=0.05)
    assert RUNNER.wait(60, A)
    form = ui.train.form_of_run(A)     # what the page's fields are set to on load
    values = {name: getattr(update, "value", update) for name, update in form.items()}
    assert values["epochs"] == 2 and values["lr"] == 0.031 and values["batch_size"] == 12
    assert values["optimizer"] == "adam" and values["label_smoothing"] == 0.05 and values["data"] == str(folder)
    assert ui.train.form_of_run("b" * 32) == {}    # a visitor with no run keeps the form as it is


def test_the_download_is_named_after_its_run_and_disabled_until_there_is_a_checkpoint(folder):
    download = ui.train.training_status(A)[3]         # an update of the download button
    assert download["interactive"] is False and download["value"] is None
    start(folder)
    assert RUNNER.wait(60, A) and RUNNER.snapshot(A).status == "finished"
    run = Path(RUNNER.snapshot(A).run_dir).name
    download = ui.train.training_status(A)[3]
    assert download["interactive"] is True
    assert Path(download["value"]).name == f"{run}-best.safetensors"
    assert Path(download["value"]).read_bytes() == Path(RUNNER.snapshot(A).best_path).read_bytes()
    # the named copy is not listed as a second checkpoint
    assert [path for _, path in ui.choices.checkpoint_choices(A) if run in path] == [RUNNER.snapshot(A).best_path]


def test_predict_names_a_run_by_its_name(folder):
    start(folder)
    assert RUNNER.wait(60, A) and RUNNER.snapshot(A).status == "finished"
    best, run = RUNNER.snapshot(A).best_path, Path(RUNNER.snapshot(A).run_dir).name
    label, info, _ = ui.predict.predict_image(str(next(Path(folder).rglob("*.png"))), best, visitor=A)
    assert f"`{run}-best.safetensors`" in info and "`best.safetensors`" not in info   # as its download is named
    assert any(run in name for name, path in ui.choices.checkpoint_choices(A) if path == best)
