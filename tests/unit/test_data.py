"""Data sets, splits, the decode cache, odd images and the batch transforms (alexnet_core.data / augment)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from PIL import Image

from alexnet_core import data as D
from alexnet_core.data import (
    DataError,
    ImageData,
    StreamingData,
    class_names,
    describe_data,
    load_split,
    native_size,
    preprocess_for,
)
from alexnet_core.images import ImageError, decode_image
from alexnet_core.models import CIFAR10_MEAN, CIFAR10_STD, get_spec
from alexnet_core.transforms import Preprocess, eval_transform, random_resized_crop, train_transform
from tests.helpers import assert_one_sentence, make_image_folder

RGB16 = Preprocess(16, 16, 3, CIFAR10_MEAN, CIFAR10_STD)
GREY16 = Preprocess(16, 16, 1, (0.5,), (0.25,))




def load(data, split, pre=RGB16, **kw):
    kw.setdefault("cache_dir", kw.pop("cache", None))
    return load_split(str(data), split, pre, **kw)


# --- Preprocess --------------------------------------------------------------------------------------

def test_preprocess_for_models_and_data(tmp_path):
    cifar = preprocess_for(get_spec("alexnet_cifar"))
    assert (cifar.input_size, cifar.store_size, cifar.in_channels) == (32, 32, 3)
    torchvision_pre = preprocess_for(get_spec("alexnet_torchvision"))
    assert (torchvision_pre.input_size, torchvision_pre.store_size) == (224, 256)
    assert preprocess_for(get_spec("alexnet")).store_size == round(227 * 256 / 224)
    # Small native images are stored at their own size, not upsampled to 256.
    assert preprocess_for(get_spec("alexnet"), data="cifar10").store_size == 32
    fashion = preprocess_for(get_spec("alexnet_fashion"), data="fashion-mnist")
    assert (fashion.input_size, fashion.store_size, fashion.in_channels) == (224, 28, 1)
    folder = make_image_folder(tmp_path / "thumbs", 2, 1, size=20)
    assert native_size(str(folder)) == 20
    assert preprocess_for(get_spec("alexnet_torchvision"), data=str(folder)).store_size == 20
    # Changing the channel count adapts mean and std.
    grey = preprocess_for(get_spec("alexnet_cifar"), in_channels=1)
    assert grey.mean == pytest.approx((sum(CIFAR10_MEAN) / 3,))
    assert preprocess_for(get_spec("alexnet_fashion"), in_channels=3).mean == (0.2860,) * 3


def test_native_size_is_none_for_mixed_or_oblong_images(tmp_path):
    make_image_folder(tmp_path / "mixed", ["a"], 1, size=20, splits=None)
    make_image_folder(tmp_path / "mixed", ["b"], 1, size=24, splits=None)
    assert native_size(str(tmp_path / "mixed")) is None
    make_image_folder(tmp_path / "oblong", 2, 1, size=(20, 10), splits=None)
    assert native_size(str(tmp_path / "oblong")) is None


def test_preprocess_round_trips_through_json():
    pre = preprocess_for(get_spec("alexnet_fashion"), data="fashion-mnist")
    assert Preprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    with pytest.raises(ValueError):
        Preprocess(32, 32, 3, (0.5,), (0.5,))


# --- Folder layouts and splits -----------------------------------------------------------------------

def test_train_and_val_folders(tmp_path):
    folder = make_image_folder(tmp_path, ["cat", "dog", "eel"], {"train": 6, "val": 2})
    train = load(folder, "train", cache=tmp_path / "cache")
    val = load(folder, "val", cache=tmp_path / "cache")
    assert isinstance(train, ImageData) and (len(train), len(val)) == (18, 6)
    assert train.classes == val.classes == ["cat", "dog", "eel"]
    assert train.images.dtype == torch.uint8 and train.images.shape == (18, 3, 16, 16)
    for data in (train, val):
        assert [data.classes[int(label)] for label in data.labels] == [p.split("/")[-2] for p in data.paths]
    assert all("/val/" in p for p in val.paths)


def test_val_carved_from_train_without_overlap(tmp_path):
    folder = make_image_folder(tmp_path, 3, {"train": 10, "test": 3}, splits=("train", "test"))
    cache = tmp_path / "cache"
    train = load(folder, "train", cache=cache, seed=0)
    val = load(folder, "val", cache=cache, seed=0)
    assert (len(train), len(val)) == (27, 3)
    assert set(train.paths).isdisjoint(val.paths)
    assert set(train.paths) | set(val.paths) == {str(p) for p in (folder / "train").rglob("*.png")}
    assert sorted(val.labels.tolist()) == [0, 1, 2]  # stratified: one of each class
    assert load(folder, "val", cache=cache, seed=0).paths == val.paths
    assert load(folder, "val", cache=cache, seed=1).paths != val.paths
    test = load(folder, "test", cache=cache)
    assert len(test) == 9 and all("/test/" in p for p in test.paths)


def test_class_folders_only_are_split_three_ways(tmp_path):
    folder = make_image_folder(tmp_path, 3, 10, splits=None)
    parts = {split: load(folder, split, cache=tmp_path / "cache") for split in ("train", "val", "test")}
    assert {s: len(d) for s, d in parts.items()} == {"train": 24, "val": 3, "test": 3}
    paths = [set(d.paths) for d in parts.values()]
    assert sum(map(len, paths)) == len(set.union(*paths)) == 30


def test_a_folder_of_labelled_photos_is_found_for_evaluation(tmp_path):
    only_test = make_image_folder(tmp_path / "only_test", 2, 3, splits=("test",))
    assert D.labelled_folder(str(only_test), "test") == only_test / "test"
    with pytest.raises(DataError, match="no val folder, only test/"):
        D.labelled_folder(str(only_test), "val")
    only_valid = make_image_folder(tmp_path / "only_valid", 2, 3, splits=("valid",))
    assert D.labelled_folder(str(only_valid), "val") == only_valid / "valid"   # VAL_FOLDER_NAMES
    plain = make_image_folder(tmp_path / "plain", 2, 3, splits=None)
    assert D.labelled_folder(str(plain), "test") == D.labelled_folder(str(plain), "val") == plain
    # A data set with a train folder follows the split rules; so do the built-in data sets.
    assert D.labelled_folder(str(make_image_folder(tmp_path / "ds", 2, 3)), "val") is None
    assert D.labelled_folder("cifar10", "test") is None


def test_load_folder_takes_every_image_labelled_by_the_models_classes(tmp_path):
    folder = make_image_folder(tmp_path / "mine", ["cat", "zebra"], 5, splits=None)
    images, total = D.load_folder(folder, RGB16, ["ant", "cat", "dog", "zebra"], cache_dir=tmp_path / "c")
    assert total == len(images) == 10 and images.classes == ["ant", "cat", "dog", "zebra"]
    assert sorted(images.labels.tolist()) == [1] * 5 + [3] * 5     # their place in the model's classes
    assert set(images.paths) == {str(p) for p in folder.rglob("*.png")}
    sample, total = D.load_folder(folder, RGB16, ["cat", "zebra"], limit=4, seed=1, cache_dir=tmp_path / "c")
    assert len(sample) == 4 and total == 10 and set(sample.paths) <= set(images.paths)
    with pytest.raises(DataError, match="zebra"):
        D.load_folder(folder, RGB16, ["cat", "dog"], cache_dir=tmp_path / "c")


def test_limit_takes_a_seeded_subset(tmp_path):
    folder = make_image_folder(tmp_path, 3, {"train": 10, "val": 2})
    full = load(folder, "train", cache=tmp_path / "c")
    small = load(folder, "train", limit=7, seed=3, cache=tmp_path / "c")
    assert len(small) == 7 and set(small.paths) <= set(full.paths)
    assert load(folder, "train", limit=7, seed=3, cache=tmp_path / "c").paths == small.paths
    assert len(load(folder, "train", limit=1000, cache=tmp_path / "c")) == 30


@pytest.mark.parametrize("make, kwargs, words", [
    (lambda p: p / "missing", {}, "does not exist"),
    (lambda p: (p / "f.txt").write_text("x") and p, {}, "no class folders"),
    (lambda p: (p / "a").mkdir() or p, {}, "no images"),
    (lambda p: make_image_folder(p, 2, 2), {"split": "test"}, "no test folder"),
    (lambda p: make_image_folder(p, 2, 2), {"split": "dev"}, "Unknown split"),
    (lambda p: make_image_folder(p, 2, 2), {"val_fraction": 0}, "val_fraction"),
    (lambda p: make_image_folder(p, 2, 2), {"val_fraction": 0.6}, "val_fraction"),
    (lambda p: make_image_folder(p, 2, 2), {"limit": 0}, "limit"),
])
def test_clear_errors(tmp_path, make, kwargs, words):
    data = make(tmp_path)
    split = kwargs.pop("split", "train")
    with pytest.raises(DataError) as error:
        load(data, split, cache=tmp_path / "c", **kwargs)
    assert words in assert_one_sentence(error, end=".")


def test_val_classes_must_exist_in_train(tmp_path):
    make_image_folder(tmp_path, ["a", "b"], 2, splits=("train",))
    make_image_folder(tmp_path, ["a", "zebra"], 1, splits=("val",))
    with pytest.raises(DataError) as error:
        load(tmp_path, "val", cache=tmp_path / "c")
    assert "zebra" in assert_one_sentence(error, end=".")


def test_a_broken_file_names_itself(tmp_path):
    folder = make_image_folder(tmp_path, 2, 2)
    (folder / "train" / "class0" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as error:
        load(folder, "train", cache=tmp_path / "c")
    assert "broken.jpg" in assert_one_sentence(error, end=".")


# --- Cache ------------------------------------------------------------------------------------------

def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "d", 2, 5)
    seen = []
    first = load(folder, "train", cache=tmp_path / "c", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (10, 10)
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds these images")

    monkeypatch.setattr(D, "decode_image", no_decoding)
    second = load(folder, "train", cache=tmp_path / "c")
    assert torch.equal(first.images, second.images) and second.paths == first.paths

    # A changed file changes the key, so the split is decoded again.
    Image.new("RGB", (30, 30), "red").save(folder / "train" / "class0" / "0000.png")
    with pytest.raises(AssertionError, match="decoded although"):
        load(folder, "train", cache=tmp_path / "c")


# --- Streaming and batches ---------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_gives_the_same_batches_as_memory(tmp_path, workers):
    folder = make_image_folder(tmp_path, 3, 5, size=20)
    pre = Preprocess(16, 12, 3, CIFAR10_MEAN, CIFAR10_STD)
    memory = load(folder, "train", pre, cache=tmp_path / "c")
    stream = load(folder, "train", pre, cache=tmp_path / "c", memory_limit_bytes=100)
    assert isinstance(stream, StreamingData) and stream.paths == memory.paths and stream.classes == memory.classes
    stream.num_workers = workers
    images, labels = map(torch.cat, zip(*stream.batches(4)))
    assert torch.equal(images, memory.images) and torch.equal(labels, memory.labels)
    shuffled = [(x, y) for x, y in stream.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0))]
    kept = [(x, y) for x, y in memory.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0))]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(shuffled, kept))
    assert [len(y) for _, y in stream.batches(4, drop_last=True)] == [4, 4, 4]


def test_memory_batches_cover_every_image_once():
    data = ImageData(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone(),
                     torch.arange(10), ["x"], None)
    order = torch.cat([y for _, y in data.batches(3, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    assert [len(y) for _, y in data.batches(3, drop_last=True)] == [3, 3, 3]
    assert len(data.to("cpu")) == 10


def test_prediction_decodes_a_file_exactly_as_loading_did(tmp_path):
    folder = make_image_folder(tmp_path, 2, 2, size=(40, 30), fmt="jpg")
    pre = Preprocess(16, 18, 3, CIFAR10_MEAN, CIFAR10_STD)
    data = load(folder, "train", pre, cache=tmp_path / "c")
    path = data.paths[1]
    assert torch.equal(decode_image(path, pre), data.images[1])
    with open(path, "rb") as f:
        assert torch.equal(decode_image(f.read(), pre), data.images[1])
    with Image.open(path) as img:
        assert torch.equal(decode_image(img, pre), data.images[1])


# --- Built-in data sets (torchvision stood in for by fakes: there is no download here) --------------

class FakeCifar:
    classes = D.CIFAR10_CLASSES

    def __init__(self, root, train, download):
        rng = np.random.default_rng(int(train))
        n = 40 if train else 20
        self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]


class FakeFashion:
    classes = D.FASHION_CLASSES

    def __init__(self, root, train, download):
        generator = torch.Generator().manual_seed(0)
        self.data = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8, generator=generator)
        self.targets = torch.arange(30) % 10


def test_builtin_data_sets_split_and_convert(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashion)
    pre = preprocess_for(get_spec("alexnet_cifar"), data="cifar10")
    train, val = (load_split("cifar10", s, pre, root=tmp_path) for s in ("train", "val"))
    assert (len(train), len(val), len(load_split("cifar10", "test", pre, root=tmp_path))) == (36, 4, 20)
    assert torch.equal(train.images[0], torch.from_numpy(FakeCifar("", True, True).data[0]).permute(2, 0, 1))
    assert train.classes == class_names("cifar10") and train.paths is None
    everything = {bytes(x.numpy()) for x in torch.cat([train.images, val.images])}
    assert len(everything) == 40  # train and carved val share nothing
    # Grey needs a conversion: it must be exactly what decode_image makes of the same picture.
    grey_pre = preprocess_for(get_spec("alexnet_cifar"), in_channels=1)
    grey = load_split("cifar10", "test", grey_pre, root=tmp_path)
    assert grey.images.shape == (20, 1, 32, 32)
    pictures = FakeCifar("", False, True).data
    assert all(torch.equal(grey.images[i], decode_image(Image.fromarray(picture), grey_pre))
               for i, picture in enumerate(pictures))
    fashion_pre = preprocess_for(get_spec("alexnet_cifar"), data="fashion-mnist")
    fashion = load_split("fashion-mnist", "test", fashion_pre, root=tmp_path)
    assert fashion.images.shape == (30, 3, 28, 28) and fashion.classes == class_names("fashion-mnist")
    first = Image.fromarray(FakeFashion("", False, True).data[0].numpy())
    assert torch.equal(fashion.images[0], decode_image(first, fashion_pre))


def test_flowers_split_nine_to_one_and_no_test(tmp_path):
    make_image_folder(tmp_path / "flower_photos", D.FLOWERS_CLASSES, 10, splits=None)
    train, val = (load_split("flowers", split, RGB16, root=tmp_path, cache_dir=tmp_path / "c")
                  for split in ("train", "val"))
    assert (len(train), len(val)) == (45, 5) and set(train.paths).isdisjoint(val.paths)
    assert train.classes == class_names("flowers")
    with pytest.raises(DataError) as error:
        load_split("flowers", "test", RGB16, root=tmp_path)
    assert "no test split" in assert_one_sentence(error, end=".")


def _tgz(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_flowers_archive_is_extracted_safely(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "yellow").save(png, "PNG")
    root = tmp_path / "good"
    root.mkdir()
    _tgz(root / "flower_photos.tgz", {f"flower_photos/{c}/{i}.png": png.getvalue()
                                      for c in D.FLOWERS_CLASSES for i in range(2)})
    assert len(load_split("flowers", "train", RGB16, root=root, cache_dir=tmp_path / "c")) == 9  # 10 photos, 9:1
    assert not (root / "flower_photos.partial").exists()

    evil = tmp_path / "evil"
    evil.mkdir()
    _tgz(evil / "flower_photos.tgz", {"../escaped.txt": b"gotcha"})
    with pytest.raises(DataError):
        load_split("flowers", "train", RGB16, root=evil)
    assert not (tmp_path / "escaped.txt").exists()


def test_class_names_and_descriptions(tmp_path):
    assert class_names("cifar10")[:2] == ["airplane", "automobile"] and len(class_names("fashion-mnist")) == 10
    make_image_folder(tmp_path / "split", ["b", "a"], 1)
    make_image_folder(tmp_path / "flat", ["y", "x"], 1, splits=None)
    assert class_names(str(tmp_path / "split")) == ["a", "b"]  # sorted, like ImageFolder
    assert class_names(str(tmp_path / "flat")) == ["x", "y"]
    assert describe_data("cifar10") == "CIFAR-10 (torchvision)"
    assert describe_data(str(tmp_path / "flat")) == f"ImageFolder {(tmp_path / 'flat').resolve()}"
    with pytest.raises(DataError) as missing:
        class_names(str(tmp_path / "nowhere"))
    assert_one_sentence(missing, "does not exist", "the built-in data sets are cifar10, fashion-mnist, flowers")


# --- decode_image on everything a phone (or a user) may send -----------------------------------------

def _png_bytes(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kw)
    return buffer.getvalue()


def _half(mode, left, right, size=(16, 16)):
    img = Image.new(mode, size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def _palette_with_transparency():
    img = _half("P", 1, 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0  # index 0 (black) is see-through
    return Image.open(io.BytesIO(_png_bytes(img)))


def _animated_gif():
    frames = [Image.new("RGB", (16, 16), "red"), Image.new("RGB", (16, 16), "blue")]
    return _png_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


ODD_IMAGES = {
    "RGBA": lambda: _half("RGBA", (255, 0, 0, 255), (0, 0, 0, 0)),
    "LA": lambda: _half("LA", (0, 255), (0, 0)),
    "P+transparency": _palette_with_transparency,
    "I;16": lambda: Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)),
    "I": lambda: Image.fromarray(np.full((16, 16), 40000, dtype=np.int32)),
    "F": lambda: Image.fromarray(np.full((16, 16), 0.25, dtype=np.float32)),
    "CMYK": lambda: Image.new("CMYK", (16, 16), (0, 255, 255, 0)),
    "1": lambda: Image.new("1", (16, 16), 1),
    "YCbCr": lambda: Image.new("RGB", (16, 16), "green").convert("YCbCr"),
    "animated GIF": _animated_gif,
    "1x1": lambda: Image.new("RGB", (1, 1), "orange"),
    "4000x12": lambda: Image.new("RGB", (4000, 12), "purple"),
    "12x4000 JPEG": lambda: _png_bytes(Image.new("RGB", (12, 4000), "purple"), "JPEG"),
}


@pytest.mark.parametrize("pre", [RGB16, GREY16], ids=["rgb", "grey"])
@pytest.mark.parametrize("name", ODD_IMAGES)
def test_decode_image_takes_any_mode(name, pre):
    decoded = decode_image(ODD_IMAGES[name](), pre)
    assert decoded.dtype == torch.uint8 and decoded.shape == (pre.in_channels, 16, 16)


def test_decode_image_flattens_transparency_on_white():
    rgba = decode_image(ODD_IMAGES["RGBA"](), RGB16)
    assert (rgba[0, :, :8] == 255).all() and (rgba[1:, :, :8] == 0).all()  # opaque red stays red
    assert (rgba[:, :, 8:] == 255).all()  # transparent black becomes white
    assert (decode_image(ODD_IMAGES["LA"](), GREY16)[:, :, 8:] == 255).all()
    palette = decode_image(_palette_with_transparency(), RGB16)
    assert (palette[:, :, 8:] == 255).all() and (palette[0, :, :8] == 255).all() and (palette[1, :, :8] == 0).all()


def test_decode_image_scales_deep_images_instead_of_clipping():
    half_grey = Image.fromarray(np.full((16, 16), 128 * 257, dtype=np.uint16))
    assert half_grey.mode == "I;16"
    assert (decode_image(half_grey, GREY16) == 128).all()  # clipping would give 255
    assert (decode_image(ODD_IMAGES["I;16"](), GREY16) == 255).all()
    assert (decode_image(ODD_IMAGES["F"](), GREY16) == 64).all()  # 0.25 of the range
    wide = Image.fromarray(np.linspace(-1000, 1000, 256, dtype=np.float32).reshape(16, 16))
    stretched = decode_image(wide, GREY16)
    assert stretched.min() == 0 and stretched.max() == 255


def test_decode_image_takes_the_first_frame_and_applies_exif_rotation(tmp_path):
    assert (decode_image(_animated_gif(), RGB16)[0] > 200).all()  # red, not the blue second frame
    gif = Image.open(io.BytesIO(_animated_gif()))
    gif.seek(1)
    assert (decode_image(gif, RGB16)[2] < 50).all()

    # A 64x32 picture, red left and blue right, saved sideways: EXIF orientation 6 = "turn 90° clockwise".
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    _half("RGB", (255, 0, 0), (0, 0, 255), size=(64, 32)).save(path, exif=exif)
    upright = decode_image(path, RGB16)
    assert upright[0, :6].float().mean() > 200 and upright[2, :6].float().mean() < 60  # red on top
    assert upright[2, -6:].float().mean() > 200 and upright[0, -6:].float().mean() < 60  # blue below


@pytest.mark.parametrize("content, words", [(b"", "empty"), (b"hello, I am text", "not an image")])
def test_decode_image_rejects_non_images(tmp_path, content, words):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    for source in (path, str(path), content):
        with pytest.raises(ImageError) as error:
            decode_image(source, RGB16)
        assert words in assert_one_sentence(error, end=".")
    with pytest.raises(ImageError) as error:
        decode_image(tmp_path / "missing.png", RGB16)
    assert_one_sentence(error, end=".")


def test_decode_image_rejects_a_truncated_jpeg():
    jpeg = _png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError) as error:
        decode_image(jpeg[: len(jpeg) // 2], RGB16)
    assert_one_sentence(error, end=".")


# --- eval_transform -----------------------------------------------------------------------------------

def _constant(value, pre, n=2, side=None):
    side = side or pre.store_size
    return torch.full((n, pre.in_channels, side, side), value, dtype=torch.uint8)


def test_eval_transform_normalises_a_constant_image():
    pre = Preprocess(32, 32, 3, CIFAR10_MEAN, CIFAR10_STD)
    out = eval_transform(_constant(128, pre), pre)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 32, 32)
    for c in range(3):
        expected = (128 / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
        assert torch.allclose(out[:, c], torch.tensor(expected), atol=1e-6)
    assert eval_transform(_constant(128, pre)[0], pre).shape == (3, 32, 32)  # one image works too
    with pytest.raises(ValueError):
        eval_transform(torch.zeros(2, 3, 32, 32), pre)


def test_eval_transform_crops_the_centre_when_stored_larger():
    pre = Preprocess(32, 40, 1, (0.0,), (1.0,))
    images = torch.zeros(1, 1, 40, 40, dtype=torch.uint8)
    images[..., 4:36, 4:36] = 255  # the centre 32x32 square is white, the 4-pixel border black
    assert (eval_transform(images, pre) == 1.0).all()


def test_eval_transform_resizes_up_when_stored_smaller():
    pre = Preprocess(32, 16, 1, (0.0,), (1.0,))
    images = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    images[..., 8:] = 255  # dark left half, bright right half
    out = eval_transform(images, pre)
    assert out.shape == (1, 1, 32, 32)
    assert (out[..., :15] == 0).all() and (out[..., 17:] == 1).all() and (out[..., 15:17] > 0).all()


# --- train_transform ----------------------------------------------------------------------------------

def _unnormalise(x, pre):
    return x * torch.tensor(pre.std)[:, None, None] + torch.tensor(pre.mean)[:, None, None]


def test_train_transform_small_is_deterministic_and_shaped():
    pre = preprocess_for(get_spec("alexnet_cifar"))
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = train_transform(images, pre, torch.Generator().manual_seed(0))
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, train_transform(images, pre, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, train_transform(images, pre, torch.Generator().manual_seed(1)))


def test_train_transform_small_crops_within_the_padding_and_flips_sometimes():
    pre = Preprocess(32, 32, 3, (0.0,) * 3, (1.0,) * 3)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    out = train_transform(image.expand(48, -1, -1, -1), pre, torch.Generator().manual_seed(0))
    padded = nnf.pad(image.float() / 255, (4, 4, 4, 4), mode="reflect")[0]
    windows = {(dy, dx, flip): (padded[:, dy:dy + 32, dx:dx + 32].flip(-1) if flip else
                                padded[:, dy:dy + 32, dx:dx + 32]) for dy in range(9) for dx in range(9)
               for flip in (False, True)}
    found = []
    for sample in out:
        match = [key for key, window in windows.items() if torch.allclose(sample, window, atol=1e-6)]
        assert len(match) == 1, "every output must be one window of the padded image"
        found.append(match[0])
    assert {flip for _, _, flip in found} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in found}) > 10


@pytest.mark.parametrize("crop_pad", [0, 2])
def test_train_transform_crop_pad_sets_how_far_the_crops_shift(crop_pad):
    pre = Preprocess(32, 32, 3, (0.0,) * 3, (1.0,) * 3)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    out = train_transform(image.expand(400, -1, -1, -1), pre, torch.Generator().manual_seed(0), flip="none",
                          crop_pad=crop_pad)
    padded = nnf.pad(image.float() / 255, (crop_pad,) * 4, mode="reflect")[0] if crop_pad else image[0] / 255
    offsets = {(dy, dx) for sample in out for dy in range(2 * crop_pad + 1) for dx in range(2 * crop_pad + 1)
               if torch.allclose(sample, padded[:, dy:dy + 32, dx:dx + 32], atol=1e-6)}
    assert len(offsets) == (2 * crop_pad + 1) ** 2    # every shift of at most crop_pad pixels, and no other
    assert all(any(torch.allclose(sample, padded[:, dy:dy + 32, dx:dx + 32], atol=1e-6) for dy, dx in offsets)
               for sample in out)


def test_train_transform_big_uses_a_random_resized_crop_per_sample():
    pre = Preprocess(96, 110, 3, CIFAR10_MEAN, CIFAR10_STD)
    images = torch.randint(0, 256, (1, 3, 110, 110), dtype=torch.uint8).expand(6, -1, -1, -1)
    out = train_transform(images, pre, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 96, 96) and out.dtype == torch.float32
    assert len({bytes(x.numpy()) for x in out}) == 6  # one crop for each sample
    assert torch.equal(out, train_transform(images, pre, torch.Generator().manual_seed(0)))
    # The whole image as the box at its own size is an exact copy: boxes are pixel-aligned.
    x = images[:2].float()
    assert torch.allclose(random_resized_crop(x, 110, scale=(1, 1), ratio=(1, 1)), x)


def test_pca_lighting_shifts_each_sample_by_one_colour():
    pre = Preprocess(96, 110, 3, (0.0,) * 3, (1.0,) * 3)
    grey = _constant(128, pre, n=4)
    plain = train_transform(grey, pre, torch.Generator().manual_seed(0))
    assert torch.allclose(plain, torch.full_like(plain, 128 / 255), atol=1e-5)
    lit = train_transform(grey, pre, torch.Generator().manual_seed(0), pca_lighting=0.1)
    shift = lit - plain
    per_sample = shift.flatten(2)
    assert torch.allclose(per_sample, per_sample[..., :1].expand_as(per_sample), atol=1e-5)  # uniform
    assert per_sample[..., 0].abs().max() > 1e-3 and not torch.allclose(shift[0], shift[1])


def test_cutout_blanks_one_square_per_sample_to_the_mean():
    from alexnet_core.transforms import random_cutout
    x = torch.ones(64, 3, 32, 32)
    out = random_cutout(x, 8, torch.Generator().manual_seed(0))
    blank = out[:, 0] == 0  # [B, H, W]
    assert torch.equal(blank[:, None].expand_as(out), out == 0)  # all channels alike
    # A square of side 8, clipped where its centre lies near the border; never larger, and each sample its own.
    rows, cols = blank.any(dim=2).sum(dim=1), blank.any(dim=1).sum(dim=1)
    assert int(rows.max()) == 8 and int(cols.max()) == 8 and int((rows * cols).min()) > 0
    assert torch.equal(blank.sum(dim=(1, 2)), rows * cols)
    assert len({tuple(b.nonzero()[0].tolist()) for b in blank}) > 10
    pre = Preprocess(32, 32, 3, (0.5,) * 3, (0.25,) * 3)
    grey = _constant(200, pre, n=8)
    cut = train_transform(grey, pre, torch.Generator().manual_seed(1), cutout=8)
    assert (cut == 0).any() and (cut != 0).any()


# --- The shared data sets ------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_shared_cifar10_test_split(cifar10_dir, tmp_path):
    pre = preprocess_for(get_spec("alexnet_cifar"), data=str(cifar10_dir))
    test = load_split(str(cifar10_dir), "test", pre, limit=500, cache_dir=tmp_path)
    assert isinstance(test, ImageData) and test.images.shape == (500, 3, 32, 32)
    assert test.classes == D.CIFAR10_CLASSES == class_names(str(cifar10_dir))
    assert len(test.labels.unique()) == 10
    assert preprocess_for(get_spec("alexnet"), data=str(cifar10_dir)).store_size == 32


@pytest.mark.shared_data
def test_shared_flowers5(flowers_dir, tmp_path):
    pre = preprocess_for(get_spec("alexnet_flowers"), data=str(flowers_dir))
    assert pre.store_size == 256
    val = load_split(str(flowers_dir), "val", pre, limit=20, cache_dir=tmp_path)
    assert val.images.shape == (20, 3, 256, 256) and val.classes == D.FLOWERS_CLASSES


def test_test_fraction_holds_out_a_test_split_that_nothing_else_sees(tmp_path):
    make_image_folder(tmp_path, ["a", "b"], n_per_class=30, size=8, splits=("train", "val"))
    pre = Preprocess(input_size=8, store_size=8, in_channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    split = {name: load_split(str(tmp_path), name, pre, test_fraction=0.2, cache_dir=tmp_path / "c")
             for name in ("train", "val", "test")}
    train, val, test = (set(split[n].paths) for n in ("train", "val", "test"))
    assert len(test) == 12 and len(train) == 48 and not train & test and not val & test
    assert all("/val/" in p for p in val)                     # the val folder stays the validation split
    assert sorted(split["test"].labels.tolist()) == [0] * 6 + [1] * 6   # stratified
    again = load_split(str(tmp_path), "test", pre, test_fraction=0.2, cache_dir=tmp_path / "c")
    assert set(again.paths) == test
    without = load_split(str(tmp_path), "train", pre, cache_dir=tmp_path / "c")
    assert len(without) == 60                                 # no test_fraction: train keeps everything
    with pytest.raises(DataError, match="no test folder"):
        load_split(str(tmp_path), "test", pre, cache_dir=tmp_path / "c")
