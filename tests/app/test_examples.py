"""Issue 19: the example photos travel with the app (committed in examples/, credited), each goes with the
shipped checkpoint that knows its class, and every answer says which classes the model knows.

These run without ../shared/data: ``no_shared`` points the app at a folder that does not exist, as on a fresh
clone or a Space.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

import ui.choices
import ui.inside
import ui.photos
import ui.predict
import ui.settings

REPO = Path(__file__).resolve().parents[2]
FLOWERS = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def no_shared(tmp_path, monkeypatch):
    monkeypatch.setattr(ui.settings, "SHARED_DATA", tmp_path / "no-shared-data")


def _shipped():
    if not (ui.settings.SHIPPED_DIR / "flowers.safetensors").is_file() or not ui.settings.DEFAULT_CHECKPOINT.is_file():
        pytest.skip("the shipped checkpoints are not in this checkout (tests/unit/test_shipped_checkpoints.py says so)")


def test_the_examples_are_committed_photos_credited_in_the_readme():
    photos = sorted(p for p in (REPO / "examples").iterdir() if p.suffix == ".jpg")
    assert len(photos) >= 4
    assert sum(p.stat().st_size for p in photos) < 1_200_000  # about 1 MB in all
    readme = (REPO / "examples" / "README.md").read_text(encoding="utf-8")
    for photo in photos:
        with Image.open(photo) as image:
            image.verify()
        assert f"`{photo.name}`" in readme, f"examples/README.md does not credit {photo.name}"
        if photo.name.startswith("flowers5-"):
            # credited as ../shared/data/README.md asks: the Flickr page from the file's photo id, CC BY 2.0
            flickr_id = re.match(r"flowers5-\w+-(\d+)_", photo.name).group(1)
            row = next(line for line in readme.splitlines() if f"`{photo.name}`" in line)
            assert f"https://www.flickr.com/photo.gne?id={flickr_id}" in row and "CC BY 2.0" in row
    assert "Krizhevsky" in readme and "Learning Multiple Layers of Features from Tiny Images" in readme


def test_each_example_goes_with_the_checkpoint_that_knows_its_class():
    _shipped()
    rows = ui.photos.example_photos()
    assert len(rows) >= 4
    for photo, checkpoint in rows:
        name = Path(photo).name
        expected = "flowers.safetensors" if name.startswith("flowers5-") else "cifar10.safetensors"
        assert Path(checkpoint).name == expected, (name, checkpoint)
        label, info, _ = ui.predict.predict_image(Image.open(photo), checkpoint)
        true_class = name.split("-")[1]
        classes = FLOWERS if expected.startswith("flowers") else CIFAR10
        assert set(label) <= set(classes) and true_class in classes
        # the shipped checkpoints get every example right (they were picked from splits neither trained on)
        assert max(label, key=label.get) == true_class, (name, label)
        assert f"Knows {len(classes)} classes:** {', '.join(classes)}; any other photo gets the nearest" in info


def test_clicking_an_example_selects_its_checkpoint():
    import gradio as gr

    _shipped()
    rows = ui.photos.example_photos()
    for index, (_, checkpoint) in enumerate(rows):
        event = gr.SelectData(None, {"index": index, "value": None})
        assert ui.photos.example_checkpoint(event) == checkpoint


def test_a_thousand_classes_are_named_in_one_line():
    line = ui.choices.knows_line([f"class {i}" for i in range(1000)])
    assert line.startswith("**Knows 1,000 classes:** class 0, class 1,") and "… and 988 more;" in line
    assert "\n" not in line


def test_the_architecture_link_opens_a_photo_its_checkpoint_knows():
    _shipped()
    _, checkpoint, image, _ = ui.inside.show_layer_inside("alexnet_flowers", "conv3", None, None)
    assert Path(checkpoint.value).name == "flowers.safetensors"
    assert image is not None and min(image.size) >= 200   # a flower photo, not a 32x32 image
    _, checkpoint, image, _ = ui.inside.show_layer_inside("alexnet_cifar_fast", "conv3", None, None)
    assert Path(checkpoint.value).name == "cifar10.safetensors" and image.size == (32, 32)
    _, checkpoint, image, _ = ui.inside.show_layer_inside("alexnet", "conv1", None, None)
    assert checkpoint.value == "untrained:alexnet" and image is not None  # still a photo to look at
