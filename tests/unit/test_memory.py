"""The memory a training run needs: estimated from shapes before it starts, checked against what the process
may use, refused in one sentence that names the largest batch that fits. Nothing here allocates more than a
small step."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet_core import data, memory
from alexnet_core.config import ConfigError, TrainConfig, check_memory
from alexnet_core.train import train
from tests.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[2]
LARGE = "1T"   # a budget everything fits in, to read an estimate back


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """200 training and 20 validation images; never decoded by these tests."""
    return make_image_folder(tmp_path_factory.mktemp("mem"), ["red", "green"], {"train": 100, "val": 10}, size=8)


def config(folder: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{"model": "alexnet_cifar", "data": str(folder), "device": "cpu", "batch_size": 64,
                          "amp": "off", **overrides})


def test_the_estimate_grows_linearly_with_the_batch_and_with_the_layers_outputs(folder, monkeypatch):
    monkeypatch.setenv(memory.BUDGET_ENV, LARGE)
    est = check_memory(config(folder))
    assert est.per_image > 0 and est.fixed > 0
    assert [est.total(b) - est.total(b - 1) for b in (2, 50, 200)] == [est.per_image] * 3
    assert est.total(128) - est.total(64) == est.total(64) - est.total(0)
    # Adam keeps two states per weight where SGD with momentum keeps one.
    adam = check_memory(config(folder, optimizer="adam"))
    assert adam.parts["optimizer"] == 2 * est.parts["optimizer"] == 2 * est.parts["weights"]
    # The paper's net at 227x227 keeps far more per image than the CIFAR net at 32x32; the data set is the
    # decoded uint8 images (220 at 8x8, kept at their own size), twice while they are first cached.
    big = check_memory(config(folder, model="alexnet"))
    assert big.per_image > 10 * est.per_image
    assert est.parts["data"] == 2 * 220 * 3 * 8 * 8


def test_the_estimate_is_within_a_sane_factor_of_a_measured_step():
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("measuring a step's peak resident set needs Linux's /proc/self/clear_refs")
    # One real step (alexnet_cifar_small, batch 128, fp32) in a fresh process: the rise of its peak resident set.
    out = subprocess.run([sys.executable, "-m", "bench.memory_estimate", "--child", "alexnet_cifar_small", "128",
                          "--device", "cpu", "--amp", "off"], capture_output=True, text=True, cwd=REPO,
                         timeout=300, check=True).stdout
    step = json.loads(out.strip().splitlines()[-1])
    assert step["measured"] > 20 * 2**20, step                     # a real step of tens of MiB, not noise
    assert step["measured"] <= step["estimated_unscaled"] * memory.SAFETY, step   # the estimate covers it
    assert step["measured"] >= step["estimated_unscaled"] / 3, step               # and is not far above it


def test_a_run_that_cannot_fit_names_the_largest_batch_and_that_batch_is_accepted(folder, monkeypatch):
    monkeypatch.setenv(memory.BUDGET_ENV, LARGE)
    est = check_memory(config(folder))
    monkeypatch.setenv(memory.BUDGET_ENV, str(est.total(37) + est.per_image // 2))
    with pytest.raises(ConfigError) as refused:
        check_memory(config(folder, batch_size=150))
    sentence = str(refused.value)
    assert "\n" not in sentence and sentence.endswith(".") and "alexnet_cifar on batches of 150" in sentence
    largest = int(re.search(r"the largest batch that fits is ([\d,]+)\.", sentence).group(1).replace(",", ""))
    assert largest == 37
    check_memory(config(folder, batch_size=largest))               # accepted
    with pytest.raises(ConfigError):
        check_memory(config(folder, batch_size=largest + 1))
    # A batch larger than the data is trained as one batch of all of it: that is what is checked.
    with pytest.raises(ConfigError, match=r"batches of 200 \(every training image; 8,192 was asked\)"):
        check_memory(config(folder, batch_size=8192))
    monkeypatch.setenv(memory.BUDGET_ENV, "1M")
    with pytest.raises(ConfigError, match="not even a batch of 2 fits"):
        check_memory(config(folder, batch_size=2))


def test_training_refuses_it_before_any_work(folder, tmp_path, monkeypatch):
    monkeypatch.setenv(memory.BUDGET_ENV, "64M")
    with pytest.raises(ConfigError, match="of memory, but this process may use 0.1 GiB"):
        train(config(folder, model="alexnet_cifar_small", batch_size=200, out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_what_the_process_may_use(monkeypatch):
    monkeypatch.setenv(memory.BUDGET_ENV, "2.5G")
    assert memory.available_bytes("cpu") == (int(2.5 * 2**30), memory.BUDGET_ENV)
    assert [memory.parse_bytes(t) for t in ("512M", "8GiB", "1000", "3k")] == [512 << 20, 8 << 30, 1000, 3072]
    with pytest.raises(ValueError, match="8G or 512M"):
        memory.parse_bytes("lots")
    monkeypatch.delenv(memory.BUDGET_ENV)
    if not Path("/proc/meminfo").exists():
        pytest.skip("the host's available memory is read from Linux's /proc/meminfo")
    budget, source = memory.available_bytes("cpu")
    total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert 0 < budget <= total and source in ("available", "left under the cgroup's limit")


def test_the_cgroups_limit_less_its_usage_is_read_in_v2_and_v1(tmp_path):
    (tmp_path / "proc").write_text("0::/app\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "memory.max").write_text("8589934592\n")       # 8 GiB
    (tmp_path / "app" / "memory.current").write_text("1073741824\n")   # 1 GiB used
    assert memory.cgroup_room(tmp_path / "proc", tmp_path) == 7 << 30
    (tmp_path / "app" / "memory.max").write_text("max\n")
    assert memory.cgroup_room(tmp_path / "proc", tmp_path) is None      # no limit
    (tmp_path / "proc").write_text("4:memory:/job\n0::/\n")
    (tmp_path / "memory" / "job").mkdir(parents=True)
    (tmp_path / "memory" / "job" / "memory.limit_in_bytes").write_text(str(6 << 30))
    (tmp_path / "memory" / "job" / "memory.usage_in_bytes").write_text(str(2 << 30))
    assert memory.cgroup_room(tmp_path / "proc", tmp_path) == 4 << 30


@pytest.mark.parametrize("layout", ["train-val", "train-only", "plain", "test-fraction"])
def test_split_sizes_count_what_load_split_gives(tmp_path, layout):
    splits = {"train-val": ("train", "val"), "train-only": ("train",), "plain": None,
              "test-fraction": ("train", "val")}[layout]
    root = make_image_folder(tmp_path, 3, 7, size=8, splits=splits)
    kwargs = dict(val_fraction=0.2, test_fraction=0.1 if layout == "test-fraction" else 0.0, seed=1)
    pre = data.Preprocess(8, 8, 3, (0.5,) * 3, (0.25,) * 3)
    loaded = tuple(len(data.load_split(str(root), s, pre, cache_dir=tmp_path / "c", **kwargs))
                   for s in ("train", "val"))
    assert data.split_sizes(str(root), **kwargs) == loaded
    assert data.split_sizes(str(root), limit=5, **kwargs) == tuple(min(5, n) for n in loaded)
