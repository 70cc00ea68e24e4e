"""Issue 24, defect 7: the command line never prints a traceback for a damaged resume file, a bad --out or an
absurd size; each is one sentence on stderr and exit status 2, before any long work, within the app's bounds."""

from __future__ import annotations

import base64
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from alexnet_core import cli
from tests.helpers import REPO, assert_one_sentence, class_image


def _refused(capsys, args: list[str], *words: str) -> str:
    """Runs the command in-process (as ``python -m alexnet_core`` runs main) and checks exit 2 with one sentence."""
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: "), err
    return assert_one_sentence(err.strip(), *words)


def _damaged(run: Path, dest: Path, damage) -> Path:
    """A copy of a run whose last.safetensors has had ``damage(state, tensors)`` done to it."""
    shutil.copytree(run, dest)
    last = dest / "last.safetensors"
    with safe_open(str(last), framework="pt") as f:
        header = dict(f.metadata())
    state, tensors = json.loads(header["alexnet_studio"]), load_file(str(last))
    damage(state, tensors)
    header["alexnet_studio"] = json.dumps(state)
    save_file(tensors, str(last), metadata=header)
    return dest


def _set(path: str, value):
    """A damage that sets state[a][b]… (path "a.b") to ``value``, or deletes it when ``value`` is ...."""
    def damage(state, tensors):
        *parents, key = path.split(".")
        for name in parents:
            state = state[name]
        if value is ...:
            del state[key]
        else:
            state[key] = value
    return damage


def _drop_tensor(name: str):
    return lambda state, tensors: tensors.pop(name)


# What the run found, each of which printed a traceback: KeyError on 'config', 'order_gen' and
# 'rng.torch', an AttributeError, a TypeError and a RuntimeError; and a run state of the wrong type.
DAMAGE = {
    "no config": _set("extra.config", ...),
    "no order_gen": _set("extra.order_gen", ...),
    "no rng.torch": _drop_tensor("rng.torch"),
    "optimizer state a list (AttributeError)": _set("optimizer.state", [1]),
    "python random state a number (TypeError)": _set("rng.python", 5),
    "order_gen too short (RuntimeError)": _set("extra.order_gen", base64.b64encode(b"0123456789").decode()),
    "epoch as text": _set("extra.epoch", "three"),
    "param groups an object": _set("optimizer.param_groups", {"a": 1}),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_resuming_a_damaged_training_state_is_one_sentence_and_exit_2(tiny, tmp_path, capsys, case):
    run = _damaged(Path(tiny[0]).parent, tmp_path / "run", DAMAGE[case])
    files = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    _refused(capsys, ["train", "--resume", str(run)], "last.safetensors", "damaged")
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == files   # nothing written


def test_resuming_an_undamaged_state_still_goes_on(tiny, tmp_path, capsys):
    run = _damaged(Path(tiny[0]).parent, tmp_path / "run", lambda state, tensors: None)
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--max-steps", "1"]) == 0, capsys.readouterr()


def _photo(tmp_path: Path) -> Path:
    photo = tmp_path / "photo.png"
    class_image(0, 32, np.random.default_rng(0)).save(photo)
    return photo


def test_out_naming_a_file_or_a_place_that_cannot_be_written_is_one_sentence_before_any_work(tiny, tmp_path, capsys):
    best, data = tiny
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a folder")
    for out in (str(a_file), "/dev/null/x"):
        _refused(capsys, ["train", "--model", "alexnet_cifar_small", "--data", str(data), "--epochs", "1",
                          "--out", out], "--out", out)
        _refused(capsys, ["explain", str(_photo(tmp_path)), "--model", "alexnet_cifar_small", "--out", out],
                 "--out", out)
        # card checks --out before it evaluates a single image: with data that does not exist, the sentence is
        # still the one about --out.
        _refused(capsys, ["card", "--checkpoint", str(best), "--data", str(tmp_path / "no-such-data"),
                          "--out", out], "--out", out)
    assert not any(tmp_path.glob("runs*"))


GiB = 2**30


@pytest.mark.parametrize("flag, value", [("--in-channels", "100000"), ("--num-classes", str(10**9))])
def test_summary_of_an_absurd_size_is_one_sentence_within_the_apps_bounds(flag, value):
    """summary --in-channels 100000 tried to allocate 20.6 GB. Run under a 6 GiB address-space limit, so that
    the old behaviour fails with a traceback here instead of taking the machine's memory."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (6 * GiB, 6 * GiB))

    result = subprocess.run([sys.executable, "-m", "alexnet_core", "summary", "--model", "alexnet", flag, value],
                            cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and result.stdout == ""
    assert_one_sentence(result.stderr.strip(), "from 1 to")
