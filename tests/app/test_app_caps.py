"""The training caps a shared server (a Hugging Face Space) sets, and how the Train tab applies them."""

from __future__ import annotations

import gradio as gr
import pytest

import ui.settings
import ui.train
from alexnet_core.caps import TrainingCaps
from alexnet_core.config import TrainConfig


def test_no_caps_by_default_and_space_defaults_on_a_space():
    assert TrainingCaps.from_env({}) == TrainingCaps()
    assert TrainingCaps().describe() == ""
    on_space = TrainingCaps.from_env({"SPACE_ID": "someone/alexnet-studio"})
    assert on_space == TrainingCaps(**TrainingCaps.SPACE_DEFAULTS)
    # An explicit setting wins, and 0 lifts a cap even on a Space.
    custom = TrainingCaps.from_env({"SPACE_ID": "x", "ALEXNET_STUDIO_MAX_EPOCHS": "5",
                                    "ALEXNET_STUDIO_MAX_TRAIN_MINUTES": "0", "ALEXNET_STUDIO_MAX_IMAGES": "100"})
    assert custom == TrainingCaps(epochs=5, minutes=None, images=100)
    with pytest.raises(ValueError, match="ALEXNET_STUDIO_MAX_EPOCHS"):
        TrainingCaps.from_env({"ALEXNET_STUDIO_MAX_EPOCHS": "-3"})
    # Not a number at all, or NaN: the same one sentence, naming the variable (not int()'s own message).
    for name, raw in (("ALEXNET_STUDIO_MAX_EPOCHS", "ten"), ("ALEXNET_STUDIO_MAX_TRAIN_MINUTES", "nan")):
        with pytest.raises(ValueError, match=f"^{name} must be 0 \\(no bound\\) or .* not '{raw}'.$"):
            TrainingCaps.from_env({name: raw})


def test_caps_refuse_too_many_epochs_and_cap_images_and_time():
    caps = TrainingCaps(epochs=10, minutes=2, images=500)
    assert "at most 10 epochs" in caps.describe() and "2 minutes" in caps.describe() \
        and "500 images" in caps.describe()
    with pytest.raises(ValueError, match="at most 10 epochs"):
        caps.apply(TrainConfig(model="alexnet_cifar_small", epochs=11))
    within = caps.apply(TrainConfig(model="alexnet_cifar_small", epochs=10, limit=None))
    assert (within.epochs, within.limit, within.time_limit) == (10, 500, 120)
    smaller = caps.apply(TrainConfig(model="alexnet_cifar_small", limit=50, time_limit=30))
    assert (smaller.limit, smaller.time_limit) == (50, 30)


def test_the_train_handler_refuses_a_run_over_the_cap_before_starting(monkeypatch, tmp_path):
    monkeypatch.setattr(ui.settings, "TRAINING_CAPS", TrainingCaps(epochs=3))
    monkeypatch.setattr(ui.settings, "RUNS_DIR", tmp_path / "runs")
    with pytest.raises(gr.Error, match="at most 3 epochs"):  # a toast on the page, AppError for the API
        ui.train.start_training(dict(model="alexnet_cifar_small", data=str(tmp_path), device="cpu", epochs=4,
                                     batch_size=8, lr=0.01, schedule="constant"))
    assert not ui.train.RUNNER.snapshot().active and not (tmp_path / "runs").exists()
