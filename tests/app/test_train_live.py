"""The Train tab's live view of the network and the Compare tab, called as the page calls them (issue 27): the
pictures come from the visitor's own run, the timeline reads its snapshots back from disk (a reload, a finished
run), another visitor sees none of it, and runs are compared only from the visitor's own list."""

import gradio as gr
import pandas as pd
import pytest
from matplotlib.figure import Figure

import ui.compare
import ui.settings
import ui.train_live
from alexnet_core.config import TrainConfig
from alexnet_core.runner import RUNNER
from tests.helpers import make_image_folder, wait_for

A, B = "a" * 32, "b" * 32     # two visitors' ids, as their browsers keep them


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    make_image_folder(root, ["red", "green", "blue"], n_per_class=24, size=32, splits=("train", "val"))
    return root


@pytest.fixture(autouse=True)
def app_home(tmp_path, monkeypatch):
    monkeypatch.setattr(ui.settings, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(ui.settings, "UPLOADS_DIR", tmp_path / "uploads")
    monkeypatch.setattr(ui.settings, "VISITORS_DIR", tmp_path / "visitors")
    yield
    RUNNER.stop_all()
    RUNNER.wait_all(60)


def finished_run_of(owner, folder):
    """Runs a 2-epoch training for ``owner`` in their runs folder, as the Train tab does, and waits for it."""
    out = ui.train_live.runs_dir(owner) / "tiny"
    RUNNER.start(TrainConfig(model="alexnet_cifar_small", data=str(folder), epochs=2, batch_size=16, lr=0.02,
                             device="cpu", out=str(out)), owner)
    assert wait_for(lambda: not RUNNER.snapshot(owner).active, timeout=120)
    state = RUNNER.snapshot(owner)
    assert state.status == "finished", state.message
    return state


def test_the_live_view_is_one_snapshot_rendered_whole(folder):
    state = finished_run_of(A, folder)
    assert state.latest is not None and state.snapshots_taken == 3        # the start and two validations
    caption, filters, guesses, features, confusion, table, slider, gif = ui.train_live.live(state)
    assert "epoch 2" in caption and "fixed images guessed right" in caption
    assert filters.width > 0 and guesses.width > 0
    assert [name.split(" ")[0] for _, name in features] == list(state.latest.features)
    assert isinstance(confusion, Figure) and "epoch 2" in confusion.axes[0].get_title()
    assert list(table["class"]) == state.latest_images.classes
    assert slider.maximum == 3 and slider.value == 3
    assert gif.interactive and "tiny-filters.gif" in str(gif.value)


def test_the_timeline_reads_the_visitors_own_snapshots_back_and_no_one_elses(folder):
    finished_run_of(A, folder)
    first = ui.train_live.at_snapshot(1, A)
    last = ui.train_live.at_snapshot(3, A)
    assert first[0].startswith("Snapshot 1 of 3") and "the start" in first[0]
    assert last[0].startswith("Snapshot 3 of 3") and "epoch 2" in last[0]
    assert isinstance(last[4], Figure) and not isinstance(first[4], Figure)   # the start has no validation yet
    # After a server restart the runner has forgotten the run: the timeline finds it in the visitor's folder.
    RUNNER._runs.clear()
    assert ui.train_live.at_snapshot(2, A)[0].startswith("Snapshot 2 of 3")
    # Another visitor sees nothing of it.
    nothing = ui.train_live.at_snapshot(1, B)
    assert nothing[0] == ui.train_live.WAITING and all(isinstance(v, type(gr.skip())) for v in nothing[1:])
    with pytest.raises(gr.Error, match="Start a run first"):
        ui.train_live.use_photo(None, B)


def test_a_photo_of_ones_own_goes_into_the_next_snapshots(folder, tmp_path):
    from PIL import Image

    photo = tmp_path / "mine.png"
    Image.new("RGB", (50, 40), (250, 0, 0)).save(photo)
    finished_run_of(A, folder)
    assert "Your photo" in ui.train_live.use_photo(str(photo), A)
    chosen = RUNNER._runner(A)._photo
    assert chosen.shape == (3, 32, 32) and int(chosen[0].float().mean()) > 200   # red, at the run's store size
    text = tmp_path / "not-a-photo.png"
    text.write_text("hello")
    with pytest.raises(gr.Error) as error:
        ui.train_live.use_photo(str(text), A)
    assert "not-a-photo.png" in str(error.value) and str(tmp_path) not in str(error.value)


def test_compare_overlays_the_visitors_runs_and_refuses_what_is_not_theirs(folder):
    finished_run_of(A, folder)
    mine = [path for _, path in ui.compare.refresh([], A).choices if "tiny" in path]
    assert len(mine) == 1
    shipped = str(ui.settings.DEFAULT_CHECKPOINT)
    chart, differences = ui.compare.compare_runs([mine[0], shipped], "time", A)
    legend = [t.get_text() for t in chart.axes[0].get_legend().get_texts()]
    assert legend == list(differences["run"]) and len(legend) == 2         # the legend names both runs
    assert chart.axes[0].get_xlabel() == "training time (minutes)"
    assert isinstance(differences, pd.DataFrame) and "model" in differences.columns   # tiny vs alexnet_cifar_fast
    with pytest.raises(gr.Error, match="two or more"):
        ui.compare.compare_runs([shipped], "epoch", A)
    with pytest.raises(gr.Error, match="not in the list"):       # B names A's run
        ui.compare.compare_runs([mine[0], shipped], "epoch", B)
