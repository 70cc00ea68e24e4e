"""A data set made of a person's own classes: a name and a few photos each (the Train tab's "Your own classes",
as Teachable Machine does), written as an ImageFolder (``train/<class>/``) from which training holds validation
photos out as from any other (``--val-fraction``; no test split, which would take photos a small class needs).

Everything is checked before a byte is written: 2 to ``MAX_CLASSES`` classes, each with a name of its own and at
least ``MIN_PHOTOS`` photos (so that validation can hold some out), every photo decoded by
``images.decode_image`` (its caps on bytes and pixels) and re-encoded as a JPEG of ``STORE_SIZE`` pixels a side
(nothing of the upload is kept as it came), and the whole within the disk room given. A refusal is an
``UploadError`` with one sentence, and leaves nothing on disk.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

from .data import VAL_FOLDER_NAMES
from .images import ImageError, decode_image
from .transforms import Preprocess
from .uploads import UploadError

MAX_CLASSES = 10
MIN_PHOTOS = 5       # with a fifth held out for validation: at least one validation photo per class
MAX_PHOTOS = 200     # per class
STORE_SIZE = 256     # the side photos are kept at: the ImageNet AlexNet's store size (it crops 224)
_NAME = re.compile(r"[\w][\w \-]{0,39}")   # letters (any script), digits, spaces, - and _; a safe folder name
SPLIT_FOLDERS = {"train", "test", *VAL_FOLDER_NAMES}   # names that data.py reads as splits, not classes
_STORE = Preprocess(input_size=224, store_size=STORE_SIZE, in_channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)


def check_classes(classes: list[tuple[str, list]]) -> list[tuple[str, list]]:
    """The classes that have a name or photos, checked: UploadError with one sentence for too few or too many
    classes, an empty, unsafe or repeated name, or a class with too few or too many photos."""
    given = [((name or "").strip(), list(photos or [])) for name, photos in classes]
    given = [(name, photos) for name, photos in given if name or photos]
    for name, photos in given:
        if not name:
            raise UploadError(f"A class with {len(photos)} photo{'s' * (len(photos) != 1)} has no name: name every "
                              f"class.")
    if len(given) < 2:
        raise UploadError("A classifier needs at least two classes: add another class with its photos.")
    if len(given) > MAX_CLASSES:
        raise UploadError(f"There are {len(given)} classes; at most {MAX_CLASSES} can be made here.")
    seen = set()
    for name, photos in given:
        if not _NAME.fullmatch(name):
            raise UploadError(f"The class name {name[:40]!r} may hold only letters, digits, spaces, - and _ "
                              f"(at most 40, starting with a letter or digit).")
        if name.casefold() in SPLIT_FOLDERS:
            raise UploadError(f"A class cannot be named {name!r}: that name marks a split of a data set; call it "
                              f"something else.")
        if name.casefold() in seen:
            raise UploadError(f"Two classes are named {name!r}: give each class its own name.")
        seen.add(name.casefold())
        if len(photos) < MIN_PHOTOS:
            raise UploadError(f"The class {name!r} has {len(photos)} photo{'s' * (len(photos) != 1)}; each class "
                              f"needs at least {MIN_PHOTOS}, so that some can be held out for validation.")
        if len(photos) > MAX_PHOTOS:
            raise UploadError(f"The class {name!r} has {len(photos)} photos; at most {MAX_PHOTOS} per class.")
    return given


def _encoded(photo, name: str) -> bytes:
    """The photo decoded with decode_image's caps and checks, as JPEG bytes at STORE_SIZE (its centre square)."""
    from PIL import Image

    try:
        pixels = decode_image(photo, _STORE)
    except ImageError as error:
        raise UploadError(f"A photo of {name!r} cannot be used: {error}") from None
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def make_dataset(classes: list[tuple[str, list]], dest: str | Path, room: int | None = None) -> Path:
    """Writes the classes (name, photos: files, bytes or PIL images) as the ImageFolder ``dest`` (a new folder)
    and returns it. Every check comes first; ``room``: the bytes it may take (the upload caps)."""
    given = check_classes(classes)
    encoded = [(name, [_encoded(photo, name) for photo in photos]) for name, photos in given]
    size = sum(len(data) for _, photos in encoded for data in photos)
    if room is not None and size > room:
        raise UploadError(f"These photos take {size / 1e6:.1f} MB, and this server has room for {room / 1e6:.1f} MB "
                          f"more of your uploads: use fewer photos.")
    dest = Path(dest)
    if dest.exists():
        raise UploadError(f"{dest.name} exists already; make the classes again in a moment.")
    try:
        for name, photos in encoded:
            folder = dest / "train" / name   # train/ alone: validation is held out of it, and no test split
            folder.mkdir(parents=True)
            for i, data in enumerate(photos):
                (folder / f"{i:03d}.jpg").write_bytes(data)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)   # a full disk or a stop: nothing half-made is left
        raise
    return dest


def run_name(classes: list[str]) -> str:
    """A run of these classes is named after them: "cat-dog-teapot" (shortened where long)."""
    name = "-".join(re.sub(r"\s+", "_", c) for c in classes)
    return name[:60]
