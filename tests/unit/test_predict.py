"""Prediction: the same tensor as evaluation, any image a phone or browser makes, TTA geometry, top-k, safe loading."""

import io
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from PIL import Image

from alexnet_core import data, images, predict, transforms
from alexnet_core.checkpoints import CheckpointError
from alexnet_core.evaluate import evaluate
from alexnet_core.images import ImageError
from alexnet_core.models import CIFAR10_MEAN, CIFAR10_STD
from alexnet_core.predict import Predictor, get_predictor, network_view
from alexnet_core.transforms import Preprocess, tta_views
from tests.helpers import ODD_FILES, animated, assert_one_sentence, class_image, encoded, make_image_folder


@pytest.fixture(scope="module")
def predictor(tiny) -> Predictor:
    return get_predictor(tiny[0])


# --- the same tensor in training, evaluation and prediction --------------------------------------------


def _odd_sized_folder(root: Path) -> Path:
    """Non-square 48x37 photos, so that decoding has to resize and crop."""
    return make_image_folder(root, ["blue", "green", "red"], n_per_class={"train": 1, "val": 2}, size=(48, 37),
                             splits=("train", "val"))


@pytest.mark.parametrize("sizes", [None, (32, 40), (32, 24)], ids=["checkpoint", "crop 40→32", "resize 24→32"])
def test_predict_feeds_the_tensor_that_evaluation_feeds(tiny, predictor, tmp_path, sizes):
    folder = _odd_sized_folder(tmp_path / "data")
    pre = predictor.pre if sizes is None else Preprocess(sizes[0], sizes[1], 3, CIFAR10_MEAN, CIFAR10_STD)
    p = Predictor(predictor.model, predictor.classes, pre, predictor.meta)
    split = data.load_split(str(folder), "val", pre, cache_dir=tmp_path / "cache")
    assert split.paths and len(split) == 6
    batch = transforms.eval_transform(split.images, pre)      # what evaluate() feeds the network, a batch at a time
    for i, path in enumerate(split.paths):
        prediction = p.predict(path)
        assert torch.equal(prediction.network_input, batch[i]), path
        assert torch.equal(p.prepare(Path(path).read_bytes()), batch[i])
    # and the network then agrees: evaluate's prediction is predict's top class, image by image
    result = evaluate(p.model, split, pre)
    assert [p.classes.index(p.predict(path).top_k[0][0]) for path in split.paths] == result.predictions.tolist()
    # and so for each test-time augmentation: evaluate's confidence is predict's top probability
    for tta in ("flip", "ten-crop"):
        result = evaluate(p.model, split, pre, tta=tta)
        top = [p.predict(path, tta=tta).top_k[0] for path in split.paths]
        assert [p.classes.index(name) for name, _ in top] == result.predictions.tolist(), tta
        assert torch.allclose(torch.tensor([prob for _, prob in top]), result.confidences, atol=1e-5), tta


# --- any image a phone or a browser makes ----------------------------------------------------------------


@pytest.mark.parametrize("name", ODD_FILES)
def test_any_image_a_browser_sends_is_classified(predictor, tmp_path, name):
    content = ODD_FILES[name]()
    path = tmp_path / name
    path.write_bytes(content)
    for image in (path, str(path), content, Image.open(io.BytesIO(content))):
        prediction = predictor.predict(image, top_k=2)
        assert len(prediction.top_k) == 2 and prediction.top_k[0][1] >= prediction.top_k[1][1]
        assert prediction.network_input.shape == (3, 32, 32) and torch.isfinite(prediction.network_input).all()
        assert sum(prediction.probabilities.values()) == pytest.approx(1, abs=1e-5)


def test_animated_images_are_classified_by_their_first_frame(predictor):
    first_frame_alone = encoded(class_image(0, 40, np.random.default_rng(1)), "GIF")
    assert torch.equal(predictor.prepare(animated()), predictor.prepare(first_frame_alone))


def test_exif_rotated_photos_are_turned_upright(predictor, tmp_path):
    upright = class_image(1, (48, 32), np.random.default_rng(3))
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90° clockwise to display": the camera stored it turned the other way
    sideways = tmp_path / "phone.png"
    upright.transpose(Image.Transpose.ROTATE_90).save(sideways, exif=exif)
    assert Image.open(sideways).size == (32, 48)  # stored sideways
    assert torch.equal(predictor.prepare(sideways), predictor.prepare(upright))


@pytest.mark.parametrize("content, words", [
    (b"", "empty"), (b"%PDF-1.4 not a picture", "not an image"), (encoded(Image.new("RGB", (64, 64)), "PNG")[:60],
                                                                  "not an image"),
])
def test_a_file_that_is_not_an_image_gets_one_sentence(predictor, tmp_path, content, words):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    for image in (path, content):
        with pytest.raises(ImageError) as err:
            predictor.predict(image)
        assert_one_sentence(err.value, words)


# --- test-time augmentation ---------------------------------------------------------------------------


IDENTITY_GREY = dict(in_channels=1, mean=(0.0,), std=(1.0,))  # normalised value = pixel / 255


def _pixels(views: torch.Tensor) -> torch.Tensor:
    return (views * 255).round().to(torch.uint8)


def test_ten_crop_takes_the_corners_and_centre_of_the_stored_photo_and_their_mirrors():
    pre = Preprocess(input_size=4, store_size=6, **IDENTITY_GREY)
    stored = torch.arange(36, dtype=torch.uint8).reshape(1, 6, 6)
    views = _pixels(tta_views(stored, pre, "ten-crop"))
    assert views.shape == (10, 1, 4, 4)
    top_left, top_right, bottom_left, bottom_right, centre = views[:5]
    assert torch.equal(top_left, stored[:, :4, :4]) and torch.equal(top_right, stored[:, :4, 2:])
    assert torch.equal(bottom_left, stored[:, 2:, :4]) and torch.equal(bottom_right, stored[:, 2:, 2:])
    assert torch.equal(centre, stored[:, 1:5, 1:5])
    assert torch.equal(centre, _pixels(transforms.eval_transform(stored, pre)))  # the plain view
    # the second five are the crops of the mirrored photo: each is a mirrored crop of the first five
    mirrored = [top_right, top_left, bottom_right, bottom_left, centre]
    for view, original in zip(views[5:], mirrored):
        assert torch.equal(view, original.flip(-1))


@pytest.mark.parametrize("pad", [None, 2])
def test_ten_crop_of_a_small_image_crops_from_a_reflect_padding(pad):
    pre = Preprocess(input_size=32, store_size=32, **IDENTITY_GREY)
    p = transforms.small_image_pad(32) if pad is None else pad
    assert p == (2 if pad is None else pad) and p < 32 // 8       # shifts smaller than training's crops
    stored = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    padded = nnf.pad(stored[None].float(), (p, p, p, p), mode="reflect")[0].to(torch.uint8)
    views = _pixels(tta_views(stored, pre, "ten-crop", pad=pad))
    assert torch.equal(views[0], padded[:, :32, :32]) and torch.equal(views[3], padded[:, 2 * p:, 2 * p:])
    assert torch.equal(views[0][:, p:, p:], stored[:, :32 - p, :32 - p])   # the image, shifted by the padding
    assert torch.equal(views[0][:, 0, p:], stored[:, p, :32 - p])          # a reflected row, not zeros
    assert torch.equal(views[4], stored) and torch.equal(views[9], stored.flip(-1))


def test_flip_and_none_views():
    pre = Preprocess(input_size=8, store_size=8, **IDENTITY_GREY)
    stored = torch.arange(64, dtype=torch.uint8).reshape(1, 8, 8)
    assert torch.equal(_pixels(tta_views(stored, pre, "none")), stored[None])
    flip = _pixels(tta_views(stored, pre, "flip"))
    assert flip.shape == (2, 1, 8, 8) and torch.equal(flip[1], stored.flip(-1))


@pytest.mark.parametrize("tta", transforms.TTA_CHOICES)
def test_tta_averages_the_softmax_of_its_views(predictor, tiny, tta):
    path = next((tiny[1] / "val" / "red").iterdir())
    prediction = predictor.predict(path, top_k=3, tta=tta)
    views = tta_views(images.decode_image(path, predictor.pre), predictor.pre, tta)
    with torch.inference_mode():
        expected = nnf.softmax(predictor.model(views), dim=1).mean(0)
    got = torch.tensor([prediction.probabilities[c] for c in predictor.classes])
    assert torch.allclose(got, expected, atol=1e-6) and prediction.tta == tta
    assert torch.equal(prediction.network_input, views[0])


# --- top-k and the arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2, 3, 5, 10.0])
def test_top_k_is_sorted_and_probabilities_sum_to_one(predictor, tiny, top_k):
    path = next((tiny[1] / "val" / "green").iterdir())
    prediction = predictor.predict(path, top_k=top_k)
    assert len(prediction.top_k) == min(int(top_k), 3)
    values = [p for _, p in prediction.top_k]
    assert values == sorted(values, reverse=True)
    assert prediction.top_k[0][0] == max(prediction.probabilities, key=prediction.probabilities.get)
    assert all(prediction.probabilities[name] == p for name, p in prediction.top_k)
    assert list(prediction.probabilities) == predictor.classes
    assert sum(prediction.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert 0 < prediction.seconds < 5


@pytest.mark.parametrize("top_k", [0, -1, 2.5, "3", True, None, 10 ** 6, float("nan")])
def test_a_bad_top_k_gets_one_sentence(predictor, top_k):
    with pytest.raises(ValueError) as err:
        predictor.predict(Image.new("RGB", (32, 32)), top_k=top_k)
    assert_one_sentence(err.value, "whole number from 1 to 1000")


def test_an_unknown_tta_gets_one_sentence(predictor):
    with pytest.raises(ValueError) as err:
        predictor.predict(Image.new("RGB", (32, 32)), tta="five-crop")
    assert_one_sentence(err.value, "none, flip, ten-crop", "five-crop")


def test_network_view_shows_the_decoded_pixels_large_enough_to_see(predictor, tiny):
    path = next((tiny[1] / "val" / "blue").iterdir())
    view = network_view(predictor.predict(path), predictor.pre)
    assert view.mode == "RGB" and view.size == (224, 224)  # 32 x 7
    stored = images.decode_image(path, predictor.pre).permute(1, 2, 0).numpy().astype(int)
    every_seventh = np.asarray(view)[::7, ::7].astype(int)
    assert np.abs(every_seventh - stored).max() <= 1  # only rounding of the normalisation round trip
    grey = Preprocess(input_size=300, store_size=300, **IDENTITY_GREY)
    assert network_view(torch.zeros(1, 300, 300), grey).size == (300, 300)  # large inputs are not scaled


# --- loading: once, and never unpickling ----------------------------------------------------------------


def test_get_predictor_loads_once_and_reloads_a_changed_file(tiny, monkeypatch):
    path = tiny[0]
    loads = []
    real = Predictor.from_checkpoint.__func__
    monkeypatch.setattr(Predictor, "from_checkpoint",
                        classmethod(lambda cls, *a, **kw: loads.append(a) or real(cls, *a, **kw)))
    monkeypatch.setattr(predict, "_cache", type(predict._cache)())
    found = []
    threads = [threading.Thread(target=lambda: found.append(get_predictor(path))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and all(p is found[0] for p in found)
    assert get_predictor(str(path)) is found[0]
    assert not found[0].model.training
    assert found[0].model.features.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # the file was replaced
    assert get_predictor(path) is not found[0] and len(loads) == 2
    with pytest.raises(CheckpointError) as err:
        get_predictor(path.parent / "missing.safetensors")
    assert_one_sentence(err.value, "no checkpoint file")


class Payload:
    """Unpickling this creates a marker file: proof that pickled code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_user_weights_with_pickled_code_are_refused_and_the_code_never_runs(predictor, tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe))).close()
    assert probe.exists(), "the payload must be live for this test to mean anything"
    marker = tmp_path / "pwned"
    weights = {**predictor.model.state_dict(), "evil": Payload(marker)}
    torch.save(weights, tmp_path / "model.pth")
    with pytest.raises(CheckpointError) as err:
        Predictor.from_user_weights(tmp_path / "model.pth", "alexnet_cifar_small")
    assert_one_sentence(err.value, "model.pth", "refuses to load")
    assert not marker.exists()


def test_user_weights_predict_like_the_checkpoint(predictor, tiny, tmp_path):
    state = {f"module.{k}": v.clone() for k, v in predictor.model.state_dict().items()}  # as DDP saves it
    torch.save({"epoch": 2, "state_dict": state}, tmp_path / "mine.pth")
    mine = Predictor.from_user_weights(tmp_path / "mine.pth", "alexnet_cifar_small")
    assert mine.classes == ["class 0", "class 1", "class 2"] and mine.pre.input_size == 32
    path = next((tiny[1] / "val" / "red").iterdir())
    theirs, ours = predictor.predict(path), mine.predict(path)
    assert [p for _, p in ours.top_k] == pytest.approx([p for _, p in theirs.top_k], abs=1e-6)
    named = Predictor.from_user_weights(tmp_path / "mine.pth", "alexnet_cifar_small", classes=["a", "b", "c"])
    assert named.predict(path).top_k[0][0] in ("a", "b", "c")
    with pytest.raises(ValueError) as err:
        Predictor.from_user_weights(tmp_path / "mine.pth", "alexnet_cifar_small", classes=["a", "b"])
    assert_one_sentence(err.value, "3 classes", "2 class names")
    with pytest.raises(CheckpointError) as err:
        Predictor.from_user_weights(tmp_path / "mine.pth", "alexnet_cifar")
    assert_one_sentence(err.value, "does not hold alexnet_cifar weights", "classifier.fc8.weight")
    state["module.features.conv2.weight"] = torch.zeros(64, 64, 3, 3)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as err:
        Predictor.from_user_weights(tmp_path / "odd.pth", "alexnet_cifar_small")
    assert_one_sentence(err.value, "odd.pth does not fit alexnet_cifar_small", "features.conv2.weight is 64x64x3x3")


def test_a_checkpoint_that_is_not_one_gets_one_sentence(tmp_path):
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        get_predictor(fake)
    assert_one_sentence(err.value, "fake.safetensors")


def test_eval_result_counts_per_class_agree_with_its_confusion_matrix_and_accuracies():
    from alexnet_core.evaluate import EvalResult

    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 1, 0, 1, 1, 0])
    result = EvalResult(classes=["a", "b", "c", "d"], labels=labels, predictions=predictions,
                        confidences=torch.ones(6), loss=0.0)
    assert result.class_counts() == {"a": (2, 3), "b": (2, 2), "c": (0, 1)}  # "d" has no images: left out
    counts = result.class_counts()
    assert result.per_class() == pytest.approx({c: right / total for c, (right, total) in counts.items()})
    assert sum(right for right, _ in result.class_counts().values()) == round(result.accuracy * result.n)
