"""The command line, run the way a user runs it: ``python -m alexnet_core …`` in a fresh process."""

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet_core.cli import main
from alexnet_core.models import MODELS
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pip_install_gives_the_alexnet_studio_command(tmp_path):
    """`pip install .` (pyproject.toml's [project]) installs the library with an `alexnet-studio` command that
    does what `python -m alexnet_core` does. Built from a copy of the package's files, so that setuptools'
    build folders land there, not in the clone; into a venv that sees the dependencies of the interpreter running
    the tests (--no-deps), wherever they are: a venv's --system-site-packages would see the base interpreter's
    packages, not those of the venv a newcomer installed the README's requirements into."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "alexnet_core", source / "alexnet_core", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The running interpreter's packages, after the venv's own (a .pth file's folders go at the end of sys.path).
    inner_site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                      "print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    outer = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (inner_site / "outer-packages.pth").write_text("\n".join(outer) + "\n")
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    command = venv / "bin" / "alexnet-studio"
    result = subprocess.run([str(command), "summary", "--model", "alexnet_cifar", "--input-size", "32", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(run_cli("summary", "--model", "alexnet_cifar", "--input-size",
                                                           "32", "--json").stdout)
    # Installed, not read from the clone: the command ran outside it, from the venv's site-packages.
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import alexnet_core; print(alexnet_core.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout
    assert Path(where.strip()).is_relative_to(venv), where


def test_summary_json_parses():
    result = run_cli("summary", "--model", "alexnet_cifar", "--input-size", "32", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "alexnet_cifar" and data["input_shape"] == [1, 3, 32, 32]
    assert data["total_params"] == 6_616_714
    assert [layer["output_shape"] for layer in data["layers"] if layer["name"] == "pool2"] == [[1, 256, 3, 3]]


def test_size_error_is_one_sentence_on_stderr_without_traceback():
    result = run_cli("summary", "--model", "alexnet", "--input-size", "224")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "fc6 expects 9,216" in result.stderr and "227" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_summary_table_defaults_to_the_variants_own_size(capsys):
    assert main(["summary", "--model", "alexnet", "--batch-norm"]) == 0
    out = capsys.readouterr().out
    assert "[1, 3, 227, 227]" in out and "bn5" in out
    assert "Total params: 62,379,720" in out


def test_options_change_the_summary(capsys):
    assert main(["summary", "--model", "alexnet_cifar_small", "--num-classes", "100",
                 "--in-channels", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [1, 1, 32, 32]
    assert data["layers"][-1]["output_shape"] == [1, 100]


def test_nonsense_size_exits_2(capsys):
    assert main(["summary", "--model", "alexnet_cifar", "--input-size", "0"]) == 2
    assert "whole number of pixels" in capsys.readouterr().err


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "alexnet_cifar_small" in out and "576,778" in out and "3x227x227" in out
    assert len(out.strip().splitlines()) == 1 + len(MODELS)
    assert "alexnet_cifar_hires" in out and "6,977,994" in out
