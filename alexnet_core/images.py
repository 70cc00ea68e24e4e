"""Decoding any image a user or a data set brings: a file, its bytes or an opened PIL image → uint8 pixels at
the store size, upright, RGB or grey, or ImageError with one sentence. Huge files and decompression bombs are
refused before their pixels are decoded (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .transforms import Preprocess

# The largest image decode_image accepts, well under Pillow's own decompression-bomb guard (89 megapixels
# warn, 178 refuse): a 48-megapixel phone photo fits; decoding one this large takes about 200 MB.
MAX_IMAGE_PIXELS = 64_000_000
MAX_IMAGE_BYTES = 64 << 20  # a file (or upload) larger than 64 MiB is refused before it is opened


class ImageError(ValueError):
    """Something that is not a decodable image; the message is one sentence for the user."""


def decode_image(image: Image.Image | str | Path | bytes, pre: Preprocess) -> torch.Tensor:
    """Any image → uint8 [C, store_size, store_size]: upright, first frame, RGB or grey, shorter side
    resized to store_size (antialiased bilinear) and the centre square cropped.

    Raises ImageError with one sentence for anything that is not a decodable image.
    """
    if isinstance(image, Image.Image):
        source = getattr(image, "filename", None)  # set when the image was opened from a file (Gradio's uploads)
        name = Path(source).name if isinstance(source, (str, os.PathLike)) and str(source) else "The image"
        opener, empty = None, False
    elif isinstance(image, (bytes, bytearray)):
        name, opener, empty = "The uploaded file", lambda: io.BytesIO(image), len(image) == 0
    else:
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"{path} does not exist or is not a file.")
        name, opener, empty = str(path), lambda: path, path.stat().st_size == 0
    if empty:
        raise ImageError(f"{name} is empty (0 bytes), not an image.")
    if isinstance(image, (bytes, bytearray)):
        size = len(image)
    elif opener is not None:
        size = path.stat().st_size
    else:  # an opened image: its file, where it came from one (Gradio's uploads do)
        size = os.path.getsize(source) if name != "The image" and os.path.isfile(source) else 0
    if size > MAX_IMAGE_BYTES:
        raise ImageError(too_many_bytes(name, size))
    try:
        if opener is None:
            return _decode_open(image, pre, name)
        with Image.open(opener()) as img:
            return _decode_open(img, pre, name)
    except Image.DecompressionBombError:  # Pillow's own guard, at twice its MAX_IMAGE_PIXELS
        raise ImageError(too_many_pixels(name, None)) from None
    except (OSError, SyntaxError, EOFError, ValueError) as error:
        # UnidentifiedImageError is an OSError; truncated files raise OSError when their pixels load.
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"{name} is not an image that can be read ({error_reason(error)}).") from None


def too_many_bytes(name: str, size: float) -> str:
    return f"{name} is {size / 2**20:,.0f} MiB; images of at most {MAX_IMAGE_BYTES >> 20} MiB are accepted."


def too_many_pixels(name: str, size: tuple[int, int] | None) -> str:
    what = f"{size[0]:,}x{size[1]:,} pixels" if size else "larger than Pillow's decompression-bomb limit"
    return (f"{name} is {what}; images of at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels are accepted "
            f"(a decompression bomb, or a photo to scale down first).")


def _decode_open(img: Image.Image, pre: Preprocess, name: str) -> torch.Tensor:
    # Only the header has been read so far: refuse a huge image before its pixels are decoded.
    if img.width * img.height > MAX_IMAGE_PIXELS:
        raise ImageError(too_many_pixels(name, img.size))
    if getattr(img, "is_animated", False):
        img.seek(0)
    img = ImageOps.exif_transpose(img)  # phones store photos sideways and say so in EXIF
    img = _rgb_or_grey(img, pre.in_channels, name)
    img = ImageOps.fit(img, (pre.store_size, pre.store_size), method=Image.Resampling.BILINEAR)
    array = np.array(img)  # a copy: [H, W] or [H, W, 3]
    return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1)).permute(2, 0, 1).contiguous()


def _rgb_or_grey(img: Image.Image, channels: int, name: str) -> Image.Image:
    """Any PIL mode → "RGB" or "L"; transparent pixels become white, high bit depths are scaled down."""
    target = "RGB" if channels == 3 else "L"
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    elif img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), rgba).convert("RGB")
    if img.mode == target:
        return img
    try:
        # Exotic modes (CMYK, YCbCr, 1, P ...) go through RGB; L → RGB → L is exact in Pillow.
        return (img if img.mode in ("L", "RGB") else img.convert("RGB")).convert(target)
    except ValueError:
        raise ImageError(f"{name} uses the colour mode {img.mode}, which cannot be converted to RGB.") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float images → 8-bit grey, scaled (not clipped) from the range they use.

    16-bit images map 0..65535 to 0..255; others are taken as 0..1 (floats), 0..255 or 0..65535 when
    their values fit, and are otherwise stretched from their minimum to their maximum.
    """
    values = np.nan_to_num(np.asarray(img).astype(np.float64))
    low, high = float(values.min()), float(values.max())
    if img.mode.startswith("I;16"):
        full_scale = 65535.0
    elif img.mode == "F" and low >= 0 and high <= 1:
        full_scale = 1.0
    elif low >= 0 and high <= 255:
        full_scale = 255.0
    elif low >= 0 and high <= 65535:
        full_scale = 65535.0
    else:
        values, full_scale = values - low, max(high - low, 1e-12)
    return Image.fromarray(np.clip(np.round(values / full_scale * 255), 0, 255).astype(np.uint8))


def error_reason(error: Exception) -> str:
    """The reason an error gives, for a sentence a user reads: an OSError's own words without the server path it
    names ("File exists", not "[Errno 17] File exists: '/srv/…'"), and no object reprs ("<_io.BytesIO object at
    0x7f…>", which Pillow puts in "cannot identify image file …")."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", text).strip().rstrip(".") or type(error).__name__
    return text.splitlines()[0]


def enlarge(image: Image.Image, min_side: int) -> Image.Image:
    """Nearest-neighbour enlarging by the smallest whole factor that brings the longer side to at least
    ``min_side`` (none when it is there already): every pixel stays a sharp square, as the network has it."""
    factor = -(-min_side // max(image.size))   # ceiling division
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
