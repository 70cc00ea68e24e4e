"""``python -m alexnet_core predict``: a line or a JSON entry per image; bad input is one sentence and exit 2."""

import json
from pathlib import Path

import pytest

from alexnet_core.cli import main
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tiny) -> tuple[Path, list[Path]]:
    """The session's tiny checkpoint (conftest.py) and one validation image per class."""
    checkpoint, folder = tiny
    images = sorted((folder / "val").glob("*/0000.png"))
    return checkpoint, images




def test_json_lists_every_image_with_its_top_k(tiny):
    checkpoint, images = tiny
    result = run_cli("predict", "--checkpoint", checkpoint, *images, "--top-k", "2", "--tta", "ten-crop",
                     "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [entry["image"] for entry in entries] == [str(path) for path in images]
    for entry in entries:
        assert len(entry["top"]) == 2 and {"blue", "green", "red"} >= {t["class"] for t in entry["top"]}
        assert entry["top"][0]["probability"] >= entry["top"][1]["probability"] > 0
        assert entry["seconds"] > 0


def test_a_line_per_image(tiny, capsys):
    checkpoint, images = tiny
    assert main(["predict", "--checkpoint", str(checkpoint), *map(str, images), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(images)
    for line, image in zip(lines, images):
        assert line.startswith(f"{image}: ") and line.count("%") == 3 and line.endswith("ms)")  # 3 classes < --top-k 5


def test_a_file_that_is_not_an_image_is_one_sentence_and_exit_2(tiny, tmp_path):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("shopping list")
    result = run_cli("predict", "--checkpoint", tiny[0], not_an_image, "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "notes.jpg is not an image that can be read" in result.stderr


@pytest.mark.parametrize("case, words", [
    ("k", "whole number from 1 to 1000"), ("checkpoint", "no checkpoint file"), ("image", "does not exist"),
])
def test_bad_arguments_are_one_sentence_and_exit_2(tiny, tmp_path, capsys, case, words):
    checkpoint, images = tiny
    checkpoint_and_images = {"k": [checkpoint, images[0], "--top-k", "0"],
                             "checkpoint": [tmp_path / "missing.safetensors", images[0]],
                             "image": [checkpoint, tmp_path / "missing.png"]}[case]
    assert main(["predict", "--device", "cpu", "--checkpoint", *map(str, checkpoint_and_images)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and len(err.strip().splitlines()) == 1
