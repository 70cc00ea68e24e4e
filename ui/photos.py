"""The photo box every tab uses, and the example photos that travel with the app.

A photo can come from an upload, a URL, a data: URL, the webcam, the clipboard or the API; each way pays the
same caps (``images.MAX_IMAGE_BYTES``, ``images.MAX_IMAGE_PIXELS``), checked from the header before a pixel is
decoded.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import gradio as gr
from PIL import Image

from alexnet_core import images

from . import settings
from .choices import default_checkpoint
from .messages import page_text
from .visitors import for_the_page

EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def photo_input(**options) -> gr.Image:
    """A gr.Image that checks every image's size from its header before anything decodes it, whichever way it
    came (upload, URL, data: URL, webcam, paste, API): Gradio decodes a data: URL, and turns an EXIF-rotated
    photo, in full before a handler runs. It then passes PIL images on in their own mode (decode_image handles
    every mode; Gradio's RGB conversion would drop transparency and clip 16-bit images), and hands a file Pillow
    cannot open to the handler as is, so that the user reads decode_image's sentence rather than a bare "Error".
    (Wrapped per instance: a gr.Image subclass would make Gradio write a .pyi file here.)"""
    image = gr.Image(type="pil", image_mode=None, **options)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        if payload is None:
            return None
        name = payload.orig_name or (Path(payload.path).name if payload.path else "The image")
        data_url = payload.url if payload.url and payload.url.startswith("data:") else None
        source = _data_url_bytes(data_url, name) if data_url else payload.path
        _check_image_header(source, name)
        try:
            return gradio_preprocess(payload)
        # Pillow's errors for what is not an image
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return source

    image.preprocess = preprocess
    return image


def _data_url_bytes(url: str, name: str) -> bytes:
    """The bytes of a data: URL, refused (gr.Error) when there would be more than an image may have."""
    import base64
    import binascii
    import urllib.parse

    head, _, body = url.partition(",")
    if len(body) * 3 // 4 > images.MAX_IMAGE_BYTES:
        raise gr.Error(page_text(images.too_many_bytes(name, len(body) * 3 / 4)))
    try:
        return base64.b64decode(body) if head.endswith(";base64") else urllib.parse.unquote_to_bytes(body)
    except (binascii.Error, ValueError):
        raise gr.Error(f"{page_text(name)} is a data: URL whose content is not valid base64; send the image "
                       f"itself.") from None


def _check_image_header(source: str | bytes | None, name: str) -> None:
    """gr.Error when the image's header (read without decoding a pixel) says it is over the app's caps: more
    than 64 megapixels or 64 MiB. What is not an image at all passes on, to get decode_image's sentence."""
    if source is None:
        return
    size = len(source) if isinstance(source, bytes) else os.path.getsize(source) if os.path.isfile(source) else 0
    if size > images.MAX_IMAGE_BYTES:
        raise gr.Error(page_text(images.too_many_bytes(name, size)))
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            pixels = opened.size
    except Image.DecompressionBombError:  # Pillow's own guard, raised by the header alone
        raise gr.Error(page_text(images.too_many_pixels(name, None))) from None
    except Exception:  # not an image: the handler says so, in decode_image's words
        return
    if pixels[0] * pixels[1] > images.MAX_IMAGE_PIXELS:
        raise gr.Error(page_text(images.too_many_pixels(name, pixels)))


def readable(error: Exception, image) -> str:
    """The error's sentence, with an uploaded file known by its name rather than Gradio's temporary path."""
    text = str(error)
    if isinstance(image, str):
        text = text.replace(image, Path(image).name)
    return for_the_page(text)


# The photos in examples/ travel with the app (credited in examples/README.md). A name that starts with a data
# set's name goes with the shipped checkpoint trained on it, so that clicking a flower selects the flowers net.
EXAMPLE_CHECKPOINTS = {"flowers5-": "flowers.safetensors", "cifar10-": "cifar10.safetensors"}


def example_photos() -> list[list[str]]:
    """[photo, checkpoint] for each photo in examples/: its data set's shipped checkpoint where that is here,
    else the default checkpoint (a photo a user drops in goes with the default)."""
    photos = sorted(p for p in settings.EXAMPLES_DIR.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES) \
        if settings.EXAMPLES_DIR.is_dir() else []
    rows = []
    for photo in photos:
        own = next((settings.SHIPPED_DIR / name for prefix, name in EXAMPLE_CHECKPOINTS.items()
                    if photo.name.startswith(prefix)), None)
        checkpoint = str(own) if own is not None and own.is_file() else default_checkpoint()
        if checkpoint is not None:
            rows.append([str(photo), checkpoint])
    return rows


def example_checkpoint(evt: gr.SelectData) -> str | gr.Dropdown:
    """The checkpoint that goes with the example photo just clicked."""
    rows = example_photos()
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return rows[index][1] if isinstance(index, int) and 0 <= index < len(rows) else gr.Dropdown()


def add_examples(image: gr.Image, checkpoint: gr.Dropdown) -> None:
    """The example photos under a photo box (a row of thumbnails); clicking one puts the photo in and selects
    the checkpoint that knows its class."""
    rows = example_photos()
    if rows:
        examples = gr.Examples([[photo] for photo, _ in rows], inputs=image, examples_per_page=12,
                               label="Examples: click one (a flower picks the flowers checkpoint, a CIFAR-10 "
                                     "image the CIFAR-10 one)")
        examples.dataset.select(example_checkpoint, outputs=checkpoint, api_name=False)
