"""The class builder (alexnet_core/own_classes.py): a person's classes become an ImageFolder, and each bad input is
refused in one sentence before anything is written."""

from __future__ import annotations

import pytest
from PIL import Image

from alexnet_core import data
from alexnet_core.own_classes import MIN_PHOTOS, make_dataset
from alexnet_core.uploads import UploadError
from tests.helpers import assert_one_sentence, class_image


@pytest.fixture
def photos(tmp_path):
    """Photo files of three classes (as a browser uploads them), MIN_PHOTOS + 1 each."""
    import numpy as np

    rng = np.random.default_rng(0)
    made = {}
    for label, name in enumerate(["cat", "dog", "teapot"]):
        made[name] = []
        for i in range(MIN_PHOTOS + 1):
            path = tmp_path / "browser" / f"{name}{i}.png"
            path.parent.mkdir(exist_ok=True)
            class_image(label, (300, 200), rng).save(path)
            made[name].append(str(path))
    return made


def test_classes_become_an_image_folder_with_validation_photos_held_out(tmp_path, photos):
    root = make_dataset([("cat", photos["cat"]), ("dog", photos["dog"]), ("teapot", photos["teapot"]),
                         ("", [])], tmp_path / "mine")
    assert data.class_names(str(root)) == ["cat", "dog", "teapot"]
    with Image.open(next((root / "train" / "cat").iterdir())) as stored:
        assert stored.size == (256, 256) and stored.format == "JPEG"   # re-encoded, never kept as it came
    train, val = data.split_sizes(str(root), val_fraction=0.2)
    assert (train, val) == (14, 4)   # a fifth of the 18 photos held out for validation, no test split


@pytest.mark.parametrize("case, words", [
    ("one class", ["two classes"]),
    ("too few photos", ["dog", str(MIN_PHOTOS)]),
    ("duplicate name", ["Cat", "own name"]),
    ("empty name", ["no name"]),
    ("a name that is a path", ["letters"]),
    ("a split's name", ["train"]),
    ("not an image", ["cat", "not"]),
    ("over the room", ["MB"]),
])
def test_each_bad_input_is_one_sentence_and_nothing_is_left_on_disk(tmp_path, photos, case, words):
    cat, dog = ("cat", photos["cat"]), ("dog", photos["dog"])
    not_image = tmp_path / "notes.png"
    not_image.write_text("a shopping list")
    classes, room = {
        "one class": ([cat, ("", [])], None),
        "too few photos": ([cat, ("dog", photos["dog"][:MIN_PHOTOS - 1])], None),
        "duplicate name": ([cat, ("Cat", photos["dog"])], None),
        "empty name": ([cat, ("  ", photos["dog"])], None),
        "a name that is a path": ([cat, ("../dog", photos["dog"])], None),
        "a split's name": ([cat, ("train", photos["dog"])], None),
        "not an image": ([("cat", [*photos["cat"], str(not_image)]), dog], None),
        "over the room": ([cat, dog], 1000),
    }[case]
    with pytest.raises(UploadError) as refused:
        make_dataset(classes, tmp_path / "mine", room=room)
    assert_one_sentence(refused, *words)
    assert not (tmp_path / "mine").exists()
