"""Hardening, images: whatever arrives as a photo is classified or refused with one sentence, and the app keeps
serving. Odd modes, animation, EXIF rotation, 1x1 and 4000x12 are classified (tests/unit/test_predict.py,
tests/unit/test_data.py; here once more through the live app's /predict); this file adds SVG, files that only
pretend to be images, decompression bombs against both Pillow's guard and the stated caps
(images.MAX_IMAGE_PIXELS, images.MAX_IMAGE_BYTES), and the live app answering after each of them.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageFile

import ui.photos
import ui.predict
from alexnet_core import data, images
from alexnet_core.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageError
from alexnet_core.models import CIFAR10_MEAN, CIFAR10_STD
from alexnet_core.transforms import Preprocess
from tests.helpers import ODD_FILES, assert_one_sentence, class_image

PRE = Preprocess(32, 32, 3, CIFAR10_MEAN, CIFAR10_STD)
CIFAR10 = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}




def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid 1-bit black PNG of width x height: a few kilobytes that decode to width*height pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte 0, then the row's bits, all zero
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
       b'<rect width="64" height="64" fill="red"/></svg>')
PRETENDERS = {  # a name that says image, content that is not one
    "drawing.svg": SVG,
    "drawing-as.png": SVG,
    "page.jpg": b"<!doctype html><html><script>alert(1)</script></html>",
    "program.png": b"\x7fELF\x02\x01\x01" + bytes(200),
    "archive.jpg": b"PK\x03\x04" + bytes(200),
    "truncated.png": png(class_image(0, 64, np.random.default_rng(0)))[:300],
    "empty.gif": b"",
}


# --- the library: decode_image ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRETENDERS)
def test_files_that_only_pretend_to_be_images_get_one_sentence(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(PRETENDERS[name])
    for source in (path, PRETENDERS[name]):
        with pytest.raises(ImageError) as error:
            images.decode_image(source, PRE)
        assert_one_sentence(error.value, "empty" if name.startswith("empty") else "not an image")


def test_a_bomb_under_pillows_guard_is_stopped_by_the_stated_pixel_cap(tmp_path):
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 200  # just over the cap, still under Pillow's 89-megapixel warning
    bomb = png_bomb(side, side)
    assert len(bomb) < MAX_IMAGE_BYTES / 100 and side * side < Image.MAX_IMAGE_PIXELS
    with Image.open(io.BytesIO(bomb)) as opened:  # a real image: Pillow would decode every pixel of it
        assert opened.size == (side, side)
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    for source in (bomb, path, Image.open(path)):
        with pytest.raises(ImageError) as error:
            images.decode_image(source, PRE)
        assert_one_sentence(error.value, f"{side:,}x{side:,} pixels", "64 megapixels")
    # a large but allowed image (16 megapixels) is decoded as usual
    assert images.decode_image(png_bomb(4000, 4000), PRE).shape == (3, 32, 32)


def test_a_bomb_over_pillows_own_guard_gets_the_same_sentence():
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100  # Pillow refuses this at open
    bomb = png_bomb(side, side)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))
    with pytest.raises(ImageError) as error:
        images.decode_image(bomb, PRE)
    assert_one_sentence(error.value, "decompression", "64 megapixels")


def test_files_over_the_byte_cap_are_refused_before_they_are_opened(tmp_path, monkeypatch):
    photo = png(class_image(1, 40, np.random.default_rng(1)))
    padded = photo + bytes(MAX_IMAGE_BYTES + 1 - len(photo))  # Pillow ignores what follows IEND
    assert Image.open(io.BytesIO(padded)).size == (40, 40)
    path = tmp_path / "huge.png"
    path.write_bytes(padded)
    opened, real_open = [], Image.open
    monkeypatch.setattr(data.Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    for source in (padded, path):
        with pytest.raises(ImageError) as error:
            images.decode_image(source, PRE)
        assert_one_sentence(error.value, "64 MiB")
    assert not opened
    assert images.decode_image(photo, PRE).shape == (3, 32, 32)


def test_truncated_images_are_not_silently_padded():
    """Pillow's LOAD_TRUNCATED_IMAGES would fill a cut-off photo with grey; nothing in the app turns it on."""
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- the app: handlers and the live server ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["drawing.svg", "page.jpg", "truncated.png"])
def test_the_predict_handler_answers_a_sentence_named_after_the_upload(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(PRETENDERS[name])
    with pytest.raises(gr.Error) as refused:  # the page's toast, the API's AppError
        ui.predict.predict_image(str(path))
    info = refused.value.message
    assert info.startswith(f"{name} is not an image") and str(tmp_path) not in info
    assert_one_sentence(info)


def _predict(client, path: Path):
    """(label, info) from /predict, or (None, the error's text) when Gradio itself refuses the upload."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    try:
        return client.predict(handle_file(str(path)), api_name="/predict")
    except AppError as error:
        return None, str(error)


def test_the_live_app_refuses_each_bad_upload_in_a_sentence_and_keeps_serving(live_app, tmp_path):
    from gradio_client import Client

    client = Client(live_app.url, verbose=False)
    good = tmp_path / "photo.png"
    class_image(2, 48, np.random.default_rng(2)).save(good)
    files = dict(PRETENDERS)
    files["bomb.png"] = png_bomb(9000, 9000)
    files["bigger-bomb.png"] = png_bomb(20000, 20000)
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        label, info = _predict(client, path)
        assert not (label or {}).get("confidences"), name
        assert label is None, (name, info)  # refused: AppError, whose message is the sentence
        if "SVG" in info:  # Gradio may refuse an .svg name itself, before the handler
            assert_one_sentence(info)
        else:
            assert_one_sentence(info, name)
        label, info = _predict(client, good)  # and the next photo is classified as usual
        assert label["label"] in CIFAR10 and "ms on cpu" in info, (name, info)


def test_the_live_app_classifies_every_odd_image(live_app, tmp_path):
    """Odd modes (RGBA, LA, P, I;16, F, CMYK), animated, 1x1, 4000x12 and 12x4000, through Gradio's upload."""
    from gradio_client import Client

    client = Client(live_app.url, verbose=False)
    for name, make in ODD_FILES.items():
        path = tmp_path / name
        path.write_bytes(make())
        label, info = _predict(client, path)
        assert label and label["label"] in CIFAR10 and len(label["confidences"]) == 5, (name, info)


# --- every way an image arrives pays the same caps, from its header ---------------------------------------


def _refused_from_the_header(payload, monkeypatch) -> str:
    """photo_input's preprocessing of ``payload``: the gr.Error's sentence, with proof that no pixel was decoded
    (Pillow's ImageFile.load, which every decode goes through, is never called) and that it took little time."""
    import time

    from PIL import ImageFile

    decoded = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or original(self))
    start = time.perf_counter()
    with pytest.raises(gr.Error) as refused:
        ui.photos.photo_input().preprocess(payload)
    seconds = time.perf_counter() - start
    assert decoded == [], decoded
    assert seconds < 2, seconds  # decoding 169 megapixels takes several seconds and a gigabyte
    return refused.value.message


def test_a_data_url_over_the_pixel_cap_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    import base64

    from gradio.data_classes import FileData

    bomb = png_bomb(13000, 13000)
    assert len(bomb) < 1 << 20  # a small file ...
    placeholder = tmp_path / "blob"
    placeholder.write_bytes(b"")
    url = "data:image/png;base64," + base64.b64encode(bomb).decode()
    message = _refused_from_the_header(FileData(path=str(placeholder), url=url, orig_name="huge.png"), monkeypatch)
    assert_one_sentence(message, "huge.png", "13,000x13,000 pixels", "64 megapixels")
    # ... and one under the cap still goes through (Gradio then decodes it, as it decodes any data: URL)
    small = "data:image/png;base64," + base64.b64encode(png(Image.new("RGB", (40, 30), "red"))).decode()
    image = ui.photos.photo_input().preprocess(FileData(path=str(placeholder), url=small, orig_name="ok.png"))
    assert image.size == (40, 30)


def test_an_uploaded_file_over_the_pixel_cap_is_refused_before_gradio_decodes_it(tmp_path, monkeypatch):
    from gradio.data_classes import FileData

    path = tmp_path / "huge.png"
    path.write_bytes(png_bomb(9000, 9000))  # 81 megapixels: under Pillow's own guard, over the app's cap
    message = _refused_from_the_header(FileData(path=str(path), orig_name="holiday.png"), monkeypatch)
    assert_one_sentence(message, "holiday.png", "9,000x9,000 pixels")
    assert str(tmp_path) not in message
