"""The training loop makes no host read per step: the loss and its finiteness stay on the device and are read at
the status cadence (issue 27, item 5). No GPU is needed to prove it: a counting stand-in records every read of a
tensor's value on the host (``.item()``, ``bool()``, ``.cpu()``, …) and the step during which it happened."""

import pytest
import torch

from alexnet_core import train as train_module
from alexnet_core.events import EndEvent, EpochEvent, StepEvent
from alexnet_core.train import train
from tests.unit.test_train import tiny_config, tiny_folder  # noqa: F401  (a fixture)

# Every way Python code reads a tensor's value on the host: each makes the host wait for the device.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@pytest.fixture
def counted_reads(monkeypatch):
    """A list of (optimizer steps taken when the read happened, what was read) that fills as training runs."""
    reads: list[tuple[int, str]] = []
    steps = {"taken": 0}
    real_step = train_module._step

    def counting_step(*args, **kwargs):
        result = real_step(*args, **kwargs)
        steps["taken"] += 1
        return result

    monkeypatch.setattr(train_module, "_step", counting_step)
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            reads.append((steps["taken"], _name))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


@pytest.mark.parametrize("settings", [
    dict(),                                                   # the 32x32 path: padded random crops and flips
    dict(batch_norm=True, cutout=8, ema=0.99),   # BatchNorm, Cutout and the weight average too
])
def test_a_step_makes_no_host_read_except_at_the_status_cadence(tiny_folder, tmp_path, counted_reads,  # noqa: F811
                                                                 settings):
    events = []
    # 96 training images at batch 16: 6 steps an epoch; a status every 4 steps and at each epoch's end.
    end = train(tiny_config(tiny_folder, tmp_path / "run", epochs=2, **settings), events.append, status_every=4)
    assert end.status == "finished", end.message
    statuses = [e.step for e in events if isinstance(e, StepEvent)]
    assert statuses == [4, 6, 8, 12]
    read_steps = {taken for taken, _ in counted_reads}
    assert read_steps - {0, *statuses} == set(), \
        f"host reads after steps {sorted(read_steps - {0, *statuses})}: {counted_reads}"
    assert (4, "item") in counted_reads         # the stand-in does see the status read


def test_the_status_loss_is_the_mean_of_the_steps_it_covers(tiny_folder, tmp_path):  # noqa: F811
    every_step, every_third = [], []
    train(tiny_config(tiny_folder, tmp_path / "a", epochs=1), every_step.append, status_every=1)
    train(tiny_config(tiny_folder, tmp_path / "b", epochs=1), every_third.append, status_every=3)
    losses = [e.loss for e in every_step if isinstance(e, StepEvent)]
    means = [e.loss for e in every_third if isinstance(e, StepEvent)]
    assert [e.step for e in every_third if isinstance(e, StepEvent)] == [3, 6]
    assert means == pytest.approx([sum(losses[:3]) / 3, sum(losses[3:6]) / 3], rel=1e-5)


def test_a_loss_that_is_not_finite_ends_the_run_in_one_sentence_before_it_is_saved(tiny_folder, tmp_path):  # noqa: F811
    events = []
    diverging = dict(epochs=2, lr=10.0, momentum=0.99, schedule="constant")
    end = train(tiny_config(tiny_folder, tmp_path / "run", **diverging), events.append, status_every=4)
    assert isinstance(events[-1], EndEvent) and end.status == "failed"
    assert end.message.startswith(("The loss became nan", "The loss became inf")), end.message
    assert "too high" in end.message and "within steps" in end.message
    assert not [e for e in events if isinstance(e, EpochEvent)]      # nothing was validated or saved
    assert end.best_path is None
