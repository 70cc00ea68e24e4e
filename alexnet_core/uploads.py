"""Unpacking an uploaded zip of an ImageFolder, safely.

Nothing in the archive may land outside its destination (no absolute paths, no "..", no drive letters, no
symlinks), and caps on the zip's own size, the number of files, their total size and the compression ratio
stop zip bombs before a byte is written; the bytes actually written are counted too, since a header can lie.
Only image files (``data.IMAGE_EXTENSIONS``) are unpacked; anything else in the zip is left in it.
Every problem is an ``UploadError`` with one sentence that names the user's file (``label``), and a refused zip
leaves nothing behind. ``check_dataset`` then checks the unpacked data set whole (every image's header, at
least two classes with readable images) before the app offers it as data.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from PIL import Image

from .data import IMAGE_EXTENSIONS
from .images import MAX_IMAGE_PIXELS, error_reason

MAX_ZIP_BYTES = 1 << 30           # 1 GiB uploaded
MAX_FILES = 50_000
MAX_TOTAL_BYTES = 2 << 30          # 2 GiB unpacked
MAX_RATIO = 200                    # unpacked / packed; images barely compress, bombs compress a millionfold


class UploadError(ValueError):
    """An upload that cannot be used, in one sentence."""


def dataset_root(folder: Path) -> Path:
    """An unpacked data set's ImageFolder root: ``folder`` itself, or the one folder it holds when the zip
    wrapped everything in one (``zip -r flowers.zip flowers/``)."""
    entries = [p for p in Path(folder).iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(folder)


def _safe_member_path(name: str, label: str = "The zip") -> PurePosixPath | None:
    """The member's relative path, or None for a directory entry; UploadError for a path that escapes."""
    path = PurePosixPath(name.replace("\\", "/"))
    if any(ord(c) < 32 for c in name):
        raise UploadError(f"{label} holds a file name with control characters in it; it was not unpacked.")
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UploadError(f"{label} holds a path that points outside it ({name}); it was not unpacked.")
    return None if name.endswith("/") else path


def claimed_size(zip_path: str | Path, label: str = "The zip") -> int:
    """What a zip's headers say its image files unpack to (extract_zip never writes more than it is allowed,
    whatever the headers say); UploadError for a file that is not a readable zip."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            return sum(m.file_size for m in archive.infolist() if m.filename.lower().endswith(IMAGE_EXTENSIONS))
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"{label} is not a readable zip file ({exc}).") from None


def extract_zip(zip_path: str | Path, dest: str | Path, *, max_files: int = MAX_FILES,
                max_total_bytes: int = MAX_TOTAL_BYTES, label: str = "The zip") -> Path:
    """Unpacks ``zip_path`` into the new folder ``dest`` and returns the ImageFolder root inside it.

    The root is ``dest`` itself, or the single top-level folder when the zip wraps everything in one
    (``dataset_root``). ``label`` names the zip in messages (the user's file name).
    """
    dest = Path(dest)
    try:
        packed_size = os.path.getsize(zip_path)
    except OSError:
        raise UploadError(f"{label} is missing (it may have expired); upload the zip again.") from None
    if packed_size > MAX_ZIP_BYTES:
        raise UploadError(f"{label} is {packed_size / 2**20:,.0f} MiB; uploads of at most "
                          f"{MAX_ZIP_BYTES >> 20:,} MiB are accepted.")
    if dest.exists():
        raise UploadError(f"{dest.name} exists already; upload the zip again in a moment.")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"{label} is not a readable zip file ({error_reason(exc)}).") from None
    with archive:
        members = archive.infolist()
        if len(members) > max_files:
            raise UploadError(f"{label} holds {len(members):,} entries; at most {max_files:,} are allowed.")
        total = sum(m.file_size for m in members if m.filename.lower().endswith(IMAGE_EXTENSIONS))  # what is kept
        packed = sum(m.compress_size for m in members)
        if total > max_total_bytes:
            raise UploadError(f"{label} unpacks to {total / 2**20:,.0f} MiB; at most "
                              f"{max_total_bytes / 2**20:,.0f} MiB are allowed.")
        if packed and sum(m.file_size for m in members) / packed > MAX_RATIO:
            raise UploadError(f"{label} is compressed suspiciously well (a zip bomb?); it was not unpacked.")
        plan = []
        for member in members:
            if stat.S_ISLNK(member.external_attr >> 16):
                raise UploadError(f"{label} holds a symbolic link ({member.filename}); it was not unpacked.")
            path = _safe_member_path(member.filename, label)
            # Only image files are kept: nothing else (.html, .svg, .js…) can be served back from an upload.
            if path is not None and not path.name.startswith(".") and "__MACOSX" not in path.parts \
                    and path.name.lower().endswith(IMAGE_EXTENSIONS):
                plan.append((member, path))
        dest.mkdir(parents=True, exist_ok=False)
        root = dest.resolve()
        try:
            written = 0
            for member, path in plan:
                target = dest.joinpath(*path.parts)
                if not target.resolve().is_relative_to(root):  # belt and braces: never write outside dest
                    raise UploadError(f"{label} holds a path that points outside it ({member.filename}); "
                                      f"it was not unpacked.")
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "xb") as out:
                    # Count real bytes, not the sizes the header claims (a header can lie).
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_total_bytes:
                            raise UploadError(f"{label} unpacks to more than it says; it was not unpacked.")
                        out.write(chunk)
        except UploadError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
            # A damaged or encrypted member, an unsupported compression, a name the disk refuses, a full disk.
            shutil.rmtree(dest, ignore_errors=True)
            raise UploadError(f"{label} could not be unpacked ({error_reason(exc)}); nothing was kept.") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dataset_root(dest)


def check_dataset(root: str | Path, label: str = "The zip") -> tuple[list[str], list[str]]:
    """Checks an unpacked ImageFolder whole, from each image's header (nothing is decoded in full).

    Image files that cannot be read, or that are over the pixel cap, are removed (training would fail on
    them). Returns (the classes that have readable images, the removed files' paths relative to ``root``);
    UploadError when fewer than two classes have a readable image: there is nothing to learn then.
    """
    root = Path(root)
    top = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
    removed, readable = [], {name: 0 for name in classes}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or not path.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        try:
            with Image.open(path) as image:
                ok = image.width * image.height <= MAX_IMAGE_PIXELS
                if ok:
                    image.verify()
        except Exception:  # Pillow raises many kinds for damaged files: each means "not readable"
            ok = False
        if not ok:
            removed.append(path.relative_to(root).as_posix())
            path.unlink()
        elif path.is_relative_to(top) and len(parts := path.relative_to(top).parts) >= 2 and parts[0] in readable:
            readable[parts[0]] += 1
    usable = [name for name, count in readable.items() if count]
    if len(usable) < 2:
        found = f"only in {usable[0]}/" if usable else "in no class folder"
        raise UploadError(f"{label} has readable images {found}; a data set needs at least two class folders "
                          f"of images (one folder per class, e.g. cats/ and dogs/, at the top or inside train/).")
    return usable, removed
