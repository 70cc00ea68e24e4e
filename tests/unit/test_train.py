"""The training engine: it learns, stops, resumes, repeats with a seed, refuses bad settings early."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from alexnet_core import checkpoints, cli
from alexnet_core.config import ConfigError, TrainConfig
from alexnet_core.evaluate import evaluate_checkpoint
from alexnet_core.events import EndEvent, EpochEvent, StepEvent
from alexnet_core.optim import lr_factor
from alexnet_core.train import train
from tests.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """4 learnable classes of 32x32 images: train/ and val/."""
    root = tmp_path_factory.mktemp("tiny")
    make_image_folder(root, ["red", "green", "blue", "gray"], n_per_class=24, size=32, splits=("train", "val"))
    return root


def tiny_config(folder: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(model="alexnet_cifar_small", data=str(folder), epochs=3, batch_size=16, lr=0.02,
                    optimizer="sgd", schedule="onecycle", device="cpu", out=str(out), half=False)
    return TrainConfig(**{**settings, **overrides})


def run(cfg, stop=None):
    events = []
    end = train(cfg, events.append, stop)
    return end, events


def test_learns_above_chance(tiny_folder, tmp_path):
    end, events = run(tiny_config(tiny_folder, tmp_path / "run", epochs=4))
    assert end.status == "finished", end.message
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert [e.epoch for e in epochs] == [1, 2, 3, 4]
    assert end.best_val_acc > 0.5, f"4 colour classes should be easy, got {end.best_val_acc}"
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert steps[-1].step == steps[-1].total_steps and all(s.images_per_s > 0 for s in steps)
    assert isinstance(events[-1], EndEvent)


def test_checkpoint_metadata_round_trip(tiny_folder, tmp_path):
    end, _ = run(tiny_config(tiny_folder, tmp_path / "run", epochs=2))
    model, meta = checkpoints.load_model(end.best_path)
    assert meta["model"] == "alexnet_cifar_small"
    assert meta["classes"] == ["blue", "gray", "green", "red"]          # ImageFolder order: sorted
    assert meta["preprocess"]["input_size"] == 32
    assert meta["config"]["lr"] == 0.02 and meta["config"]["data"] == str(tiny_folder)
    assert len(meta["history"]) == 2 and {"train_loss", "val_acc", "wall_time_s"} <= set(meta["history"][0])
    assert meta["best_val_acc"] == max(h["val_acc"] for h in meta["history"])
    assert "torch" in meta["versions"]
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_same_seed_repeats(tiny_folder, tmp_path):
    _, a = run(tiny_config(tiny_folder, tmp_path / "a", epochs=1))
    _, b = run(tiny_config(tiny_folder, tmp_path / "b", epochs=1))
    _, c = run(tiny_config(tiny_folder, tmp_path / "c", epochs=1, seed=1))
    losses = lambda events: [e.loss for e in events if isinstance(e, StepEvent)]
    assert losses(a) == losses(b)
    assert losses(a) != losses(c)


def test_stop_then_resume(tiny_folder, tmp_path):
    stop = threading.Event()
    seen = []

    def on_event(event):
        seen.append(event)
        if isinstance(event, StepEvent) and event.step == 7:   # mid-way through epoch 2 (6 steps an epoch)
            stop.set()

    cfg = tiny_config(tiny_folder, tmp_path / "run", epochs=3)
    end = train(cfg, on_event, stop, command="python -m alexnet_core train --model …")
    assert end.status == "stopped" and "Stopped" in end.message
    assert max(e.step for e in seen if isinstance(e, StepEvent)) == 7
    assert checkpoints.load_model(end.best_path)[0] is not None        # the best checkpoint is kept

    events = []
    end2 = train(TrainConfig(resume=str(tmp_path / "run"), epochs=3, device="cpu"), events.append,
                 command="python -m alexnet_core train --resume …")
    assert end2.status == "finished", end2.message
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert steps[0] == 8 and steps[-1] == 18                            # it went on, not from the start
    meta = checkpoints.read_metadata(end2.best_path)
    assert meta["history"][-1]["epoch"] == 3
    # The card can give both commands: the one that started the run and the one that resumed it.
    assert meta["command"] == "python -m alexnet_core train --model …"
    assert meta["resume_commands"] == ["python -m alexnet_core train --resume …"]


def test_max_steps_still_validates_and_saves(tiny_folder, tmp_path):
    end, events = run(tiny_config(tiny_folder, tmp_path / "run", max_steps=2))
    assert end.status == "finished" and "max-steps" in end.message
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1, 2]
    assert len([e for e in events if isinstance(e, EpochEvent)]) == 1
    assert Path(end.best_path).is_file()


@pytest.mark.parametrize("overrides, words", [
    (dict(lr=-1.0), "Learning rate"),
    (dict(epochs=0), "Epochs"),
    (dict(batch_size=1), "Batch size"),
    (dict(model="vgg16"), "Unknown model"),
    (dict(optimizer="rmsprop"), "Optimizer"),
    (dict(flip="sideways"), "Flip"),
    (dict(whiten="yes"), "whiten"),
    (dict(device="tpu"), "device"),
    (dict(model="alexnet", input_size=32), "alexnet"),
])
def test_bad_settings_fail_before_work(tiny_folder, tmp_path, overrides, words):
    with pytest.raises(ConfigError if "input_size" not in overrides and "device" not in overrides
                       else ValueError) as info:
        train(tiny_config(tiny_folder, tmp_path / "run", **overrides))
    assert words.lower() in str(info.value).lower()
    assert not (tmp_path / "run").exists()          # refused before any work


def test_schedules():
    total, warm = 100, 30
    one = [lr_factor("onecycle", s, total, warm) for s in range(total)]
    assert one[0] == pytest.approx(1 / 25) and max(one) == pytest.approx(1.0) and one[-1] < 0.01
    assert one.index(max(one)) == warm
    cos = [lr_factor("cosine", s, total, 0) for s in range(total)]
    assert cos[0] == 1.0 and all(a >= b for a, b in zip(cos, cos[1:]))
    assert [lr_factor("constant", s, total, 10) for s in (0, 9, 50)] == [0.1, 1.0, 1.0]


def test_a_time_limit_shorter_than_the_epochs_plans_the_schedule_to_end_at_it(tiny_folder, tmp_path):
    # 1,000 epochs of 6 steps cannot be done in 4 s: the schedule follows the clock instead, so the run warms up
    # and anneals within its 4 s (it was cut off early in its warm-up before, at a twentieth of the way).
    end, events = run(tiny_config(tiny_folder, tmp_path / "run", epochs=1000, time_limit=4.0, lr=0.02))
    assert end.status == "stopped" and "time limit" in end.message
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert steps[-1].step < steps[-1].total_steps / 20
    lrs = [e.lr for e in steps]
    assert max(lrs) > 0.9 * 0.02 and lrs[-1] < 0.05 * 0.02, (max(lrs), lrs[-1])
    peak = lrs.index(max(lrs))
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:peak], lrs[1:peak + 1]))      # up, then down
    assert all(a >= b - 1e-12 for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    saved = checkpoints.read_metadata(end.best_path)
    assert saved["wall_time_s"] <= 4.0 + 2.0


def test_the_schedule_follows_the_clock_only_where_the_epochs_would_take_longer_and_never_goes_back():
    from types import SimpleNamespace

    from alexnet_core.train import RunState, _schedule_step

    run_of = lambda limit: SimpleNamespace(cfg=TrainConfig(time_limit=limit), schedule_steps=1000)
    state = RunState(step=100)
    assert _schedule_step(state, run_of(None), elapsed_s=50) == 100            # no limit: the steps
    assert _schedule_step(state, run_of(100.0), elapsed_s=50) == 500           # half the time: half the plan
    state.step = 900
    assert _schedule_step(state, run_of(100.0), elapsed_s=60) == 900           # the steps are further along
    state.step = 10     # e.g. resumed without its time limit: the schedule stays where it was
    assert _schedule_step(state, run_of(None), elapsed_s=0) == 900
    assert _schedule_step(RunState(), run_of(1.0), elapsed_s=5) == 1000       # past the limit: the plan's end


def test_plateau_divides_by_ten(tiny_folder, tmp_path):
    # lr so small that validation cannot improve: the rate must drop after `plateau_patience` epochs.
    end, events = run(tiny_config(tiny_folder, tmp_path / "run", epochs=4, lr=1e-9, schedule="plateau",
                                  plateau_patience=1))
    lrs = [e.lr for e in events if isinstance(e, EpochEvent)]
    assert lrs[-1] < lrs[0] / 5


def test_evaluate_checkpoint(tiny_folder, tmp_path):
    end, _ = run(tiny_config(tiny_folder, tmp_path / "run", epochs=2))
    result = evaluate_checkpoint(end.best_path, str(tiny_folder), "val").to_json()
    assert set(result) >= {"accuracy", "per_class", "confusion", "n"}
    assert result["n"] == 4 * 24 and sum(map(sum, result["confusion"])) == result["n"]
    assert 0 <= result["accuracy"] <= 1 and set(result["per_class"]) == {"blue", "gray", "green", "red"}
    diagonal = sum(result["confusion"][i][i] for i in range(4))
    assert result["accuracy"] == pytest.approx(diagonal / result["n"])
    # validation during training and evaluate afterwards agree (same preprocessing, same weights)
    assert result["accuracy"] == pytest.approx(end.best_val_acc)


@pytest.mark.parametrize("splits", [("test",), None], ids=["DIR-test-class", "DIR-class"])
def test_evaluate_measures_a_folder_of_your_own_labelled_photos_whole(tiny_folder, tmp_path, splits, capsys):
    end, _ = run(tiny_config(tiny_folder, tmp_path / "run", epochs=1))
    # 7 photos of each of three of the checkpoint's four classes, in DIR/test/<class>/ or DIR/<class>/.
    mine = make_image_folder(tmp_path / "mine", ["red", "green", "blue"], n_per_class=7, splits=splits, seed=5)
    measured = mine / "test" if splits else mine
    proc = _cli("evaluate", "--checkpoint", end.best_path, "--data", str(mine), "--split", "test", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == 21 and sum(map(sum, report["confusion"])) == 21
    assert report["classes"] == ["blue", "gray", "green", "red"]            # the checkpoint's, not "test"
    assert set(report["per_class"]) == {"red", "green", "blue"}
    assert report["measured"] == f"every image in {measured} (21)"
    assert cli.main(["evaluate", "--checkpoint", end.best_path, "--data", str(mine), "--split", "test"]) == 0
    assert f"on 21 images (every image in {measured} (21))" in capsys.readouterr().out
    result = evaluate_checkpoint(end.best_path, str(mine), "test", limit=5)
    assert result.n == 5 and result.measured == f"a seeded sample of 5 of the 21 images in {measured}"


def test_evaluate_refuses_class_folders_the_checkpoint_does_not_know_by_their_names(tiny_folder, tmp_path, capsys):
    end, _ = run(tiny_config(tiny_folder, tmp_path / "run", epochs=1))
    mine = make_image_folder(tmp_path / "mine", ["red", "purple"], n_per_class=2, splits=("test",))
    assert cli.main(["evaluate", "--checkpoint", end.best_path, "--data", str(mine), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "not trained on (purple)" in err and "(test" not in err and len(err.strip().splitlines()) == 1


def test_evaluate_still_holds_out_the_test_split_of_the_checkpoints_own_data(tmp_path):
    plain = make_image_folder(tmp_path / "plain", ["red", "green"], n_per_class=20, size=32, splits=None)
    end, _ = run(tiny_config(plain, tmp_path / "run", epochs=1, batch_size=8))
    result = evaluate_checkpoint(end.best_path, str(plain), "test")          # trained on it: 10% held out
    assert result.n == 4 and result.measured.startswith("the test split of")


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "alexnet_core", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, **kwargs)


def test_cli_train_and_evaluate(tiny_folder, tmp_path):
    out = tmp_path / "run"
    proc = _cli("train", "--model", "alexnet_cifar_small", "--data", str(tiny_folder), "--epochs", "2",
                "--batch-size", "16", "--lr", "0.02", "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2/2" in proc.stdout + proc.stderr
    proc = _cli("evaluate", "--checkpoint", str(out / "best.safetensors"), "--data", str(tiny_folder),
                "--split", "val", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == 96 and len(report["confusion"]) == 4


def test_cli_bad_setting_is_one_sentence(tiny_folder, tmp_path):
    proc = _cli("train", "--model", "alexnet_cifar_small", "--data", str(tiny_folder), "--lr", "-3",
                "--out", str(tmp_path / "run"))
    assert proc.returncode != 0
    assert "Learning rate" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ddp_two_gloo_processes(tiny_folder, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "alexnet_core", "train", "--model", "alexnet_cifar_small", "--data", str(tiny_folder), "--epochs", "2",
         "--batch-size", "16", "--lr", "0.02", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = checkpoints.read_metadata(out / "best.safetensors")
    assert meta["world_size"] == 2
    # --batch-size is per process: 96 training images in global batches of 2 x 16 make 3 steps an epoch,
    # half of what one process takes, so the processes shared the data rather than each doing all of it.
    assert meta["history"][-1]["step"] == 6
    assert len(meta["history"]) == 2 and meta["best_val_acc"] is not None


def test_short_cli_run_on_shared_cifar10(cifar10_dir, tmp_path):
    out = tmp_path / "run"
    proc = _cli("train", "--model", "alexnet_cifar_small", "--data", str(cifar10_dir), "--limit", "1000",
                "--max-steps", "5", "--batch-size", "64", "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = checkpoints.read_metadata(out / "best.safetensors")
    assert meta["classes"][:3] == ["airplane", "automobile", "bird"] and meta["num_classes"] == 10
    assert meta["history"][-1]["step"] == 5


def test_weight_average_is_validated_saved_and_resumed(tiny_folder, tmp_path):
    from safetensors import safe_open

    end, _ = run(tiny_config(tiny_folder, tmp_path / "run", epochs=1, ema=0.9, batch_norm=True))
    with safe_open(str(tmp_path / "run" / "last.safetensors"), "pt") as f:
        keys = list(f.keys())
        averaged = {k[len("averaged.module."):]: f.get_tensor(k) for k in keys if k.startswith("averaged.module.")}
        raw = {k[len("model."):]: f.get_tensor(k) for k in keys if k.startswith("model.")}
    assert "averaged.n_averaged" in keys                          # the average's step count resumes too
    assert set(averaged) == set(raw)                              # weights and BatchNorm buffers alike
    weight = next(k for k in raw if k.endswith("conv1.weight"))
    assert not torch.equal(averaged[weight], raw[weight])         # an average, not a copy
    best, _ = checkpoints.load_checkpoint(end.best_path)          # one epoch: best and last are the same step
    assert torch.equal(best[weight], averaged[weight])            # best.safetensors holds the average
    end2, events = run(TrainConfig(resume=str(tmp_path / "run"), epochs=2, device="cpu"))
    assert end2.status == "finished", end2.message
    assert [e.epoch for e in events if isinstance(e, EpochEvent)] == [2]


def test_whitened_conv1_is_the_whitening_and_stays_frozen_while_the_rest_learns_and_after_a_resume(tiny_folder,
                                                                                                  tmp_path):
    from safetensors.torch import load_file

    from alexnet_core import data
    from alexnet_core.models import get_spec, whiten_conv_
    from alexnet_core.train import _whitening_sample

    out = tmp_path / "run"
    end, _ = run(tiny_config(tiny_folder, out, model="alexnet_cifar_hires", whiten=True, epochs=2, max_steps=3))
    assert end.status == "finished", end.message
    assert checkpoints.read_metadata(end.best_path)["config"]["whiten"] is True
    first = load_file(str(out / "last.safetensors"))
    # The trained conv1 is the whitening of the training images, computed again here from scratch.
    pre = data.preprocess_for(get_spec("alexnet_cifar_hires"), data=str(tiny_folder))
    fresh = torch.nn.Conv2d(3, 64, 3, padding=1, bias=False)
    whiten_conv_(fresh, _whitening_sample(data.load_split(str(tiny_folder), "train", pre), pre, "cpu"))
    assert torch.allclose(first["model.features.conv1.weight"][:54], fresh.weight[:54], atol=1e-4)

    end, _ = run(tiny_config(tiny_folder, out, model="alexnet_cifar_hires", whiten=True, resume=str(out), epochs=2))
    assert end.status == "finished", end.message
    second = load_file(str(out / "last.safetensors"))
    assert torch.equal(second["model.features.conv1.weight"], first["model.features.conv1.weight"])
    assert not torch.equal(second["model.features.conv2.weight"], first["model.features.conv2.weight"])


def test_alternating_flip_shows_every_image_once_each_way_in_two_epochs():
    from alexnet_core import data, transforms
    from alexnet_core.models import get_spec
    from alexnet_core.train import _epoch_flip, _half_mirrored

    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    labels = torch.zeros(64, dtype=torch.long)
    stored = _half_mirrored(data.ImageData(images, labels, ["a"], None), seed=0).images
    assert 16 < sum(not torch.equal(a, b) for a, b in zip(stored, images)) < 48     # about half
    assert torch.equal(_half_mirrored(data.ImageData(images, labels, ["a"], None), seed=0).images, stored)
    # What each epoch's flip makes of the stored images, before the crop (which does not depend on the flip).
    seen = {e: stored if _epoch_flip("alternating", e) == "none" else stored.flip(-1) for e in (1, 2, 3)}
    for i in range(64):
        assert torch.equal(seen[1][i], seen[3][i])
        assert {tuple(seen[1][i].flatten().tolist()), tuple(seen[2][i].flatten().tolist())} == \
            {tuple(images[i].flatten().tolist()), tuple(images[i].flip(-1).flatten().tolist())}
    assert _epoch_flip("random", 1) == _epoch_flip("random", 2) == "random"
    # train_transform's "all" is its "none" mirrored: the same crops, drawn from the same generator.
    pre = data.preprocess_for(get_spec("alexnet_cifar_small"))
    none = transforms.train_transform(images, pre, torch.Generator().manual_seed(0), flip="none")
    mirrored = transforms.train_transform(images, pre, torch.Generator().manual_seed(0), flip="all")
    assert torch.equal(mirrored, none.flip(-1))
    with pytest.raises(ValueError, match="flip"):
        transforms.train_transform(images, pre, flip="sideways")


def test_resumed_run_keeps_its_own_epochs_unless_the_command_overrides_them(tiny_folder, tmp_path):
    out = tmp_path / "run"
    # 96 images in batches of 16: 6 steps an epoch, so --max-steps 6 stops the 2-epoch run after epoch 1.
    proc = _cli("train", "--model", "alexnet_cifar_small", "--data", str(tiny_folder), "--epochs", "2",
                "--batch-size", "16", "--lr", "0.02", "--device", "cpu", "--out", str(out), "--max-steps", "6")
    assert proc.returncode == 0, proc.stderr
    assert [h["epoch"] for h in checkpoints.read_metadata(out / "best.safetensors")["history"]] == [1]

    proc = _cli("train", "--resume", str(out))                      # no --epochs: the run's own 2
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "epoch 2/2" in text and "epoch 3/" not in text and "/10" not in text
    assert "Resumed with the run's own settings." in text
    meta = checkpoints.read_metadata(out / "best.safetensors")
    assert meta["history"][-1]["epoch"] == 2 and meta["config"]["epochs"] == 2

    proc = _cli("train", "--resume", str(out), "--epochs", "3")     # the command overrides epochs, and says so
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "epoch 3/3" in text
    assert "except epochs 2 → 3 (overridden)" in text
    meta = checkpoints.read_metadata(out / "best.safetensors")
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3] and meta["config"]["epochs"] == 3
    assert meta["config"]["lr"] == 0.02 and meta["config"]["batch_size"] == 16   # the rest is the run's own


def test_resumed_run_refuses_to_change_what_its_state_depends_on(tiny_folder, tmp_path):
    from alexnet_core.config import resumed_config

    end, _ = run(tiny_config(tiny_folder, tmp_path / "run", epochs=1))
    saved = checkpoints.read_train_extra(tmp_path / "run" / "last.safetensors")["config"]
    last = tmp_path / "run" / "last.safetensors"
    with pytest.raises(ConfigError, match="--model cannot change"):
        resumed_config(TrainConfig(model="alexnet_cifar", resume=str(last)), saved, last, {"model"})
    # Only what was given overrides: lr given, epochs (at its default 10) not given.
    cfg, overrides = resumed_config(TrainConfig(lr=0.5, resume=str(last)), saved, last, {"lr"})
    assert cfg.lr == 0.5 and cfg.epochs == 1 and overrides == {"lr": (0.02, 0.5)}
    # The library's default for `given`: the settings that differ from TrainConfig's defaults.
    cfg, overrides = resumed_config(TrainConfig(resume=str(last)), saved, last)
    assert cfg.epochs == 1 and cfg.batch_size == 16 and overrides == {}
