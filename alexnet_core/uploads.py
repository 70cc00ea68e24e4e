"""Unpacking an uploaded zip of an ImageFolder, safely.

Nothing in the archive may land outside its destination (no absolute paths, no "..", no drive letters, no
symlinks), and caps on the zip's own size, the number of files, their total size and the compression ratio
stop zip bombs before a byte is written; the bytes actually written are counted too, since a header can lie.
Every problem is an ``UploadError`` with one sentence, and a refused zip leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_ZIP_BYTES = 1 << 30           # 1 GiB uploaded
MAX_FILES = 50_000
MAX_TOTAL_BYTES = 2 << 30          # 2 GiB unpacked
MAX_RATIO = 200                    # unpacked / packed; images barely compress, bombs compress a millionfold


class UploadError(ValueError):
    """An upload that cannot be used, in one sentence."""


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The member's relative path, or None for a directory entry; UploadError for a path that escapes."""
    path = PurePosixPath(name.replace("\\", "/"))
    if any(ord(c) < 32 for c in name):
        raise UploadError("The zip holds a file name with control characters in it; it was not unpacked.")
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UploadError(f"The zip holds a path that points outside it ({name}); it was not unpacked.")
    return None if name.endswith("/") else path


def extract_zip(zip_path: str | Path, dest: str | Path, *, max_files: int = MAX_FILES,
                max_total_bytes: int = MAX_TOTAL_BYTES) -> Path:
    """Unpacks ``zip_path`` into the new folder ``dest`` and returns the ImageFolder root inside it.

    The root is ``dest`` itself, or the single top-level folder when the zip wraps everything in one.
    """
    dest = Path(dest)
    try:
        packed_size = os.path.getsize(zip_path)
    except OSError:
        raise UploadError("The upload is missing (it may have expired); upload the zip again.") from None
    if packed_size > MAX_ZIP_BYTES:
        raise UploadError(f"The zip is {packed_size / 2**20:,.0f} MiB; uploads of at most "
                          f"{MAX_ZIP_BYTES >> 20:,} MiB are accepted.")
    if dest.exists():
        raise UploadError(f"{dest.name} exists already; upload the zip again in a moment.")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"The upload is not a readable zip file ({exc}).") from None
    with archive:
        members = archive.infolist()
        if len(members) > max_files:
            raise UploadError(f"The zip holds {len(members):,} entries; at most {max_files:,} are allowed.")
        total = sum(m.file_size for m in members)
        packed = sum(m.compress_size for m in members)
        if total > max_total_bytes:
            raise UploadError(f"The zip unpacks to {total / 2**20:,.0f} MiB; at most "
                              f"{max_total_bytes / 2**20:,.0f} MiB are allowed.")
        if packed and total / packed > MAX_RATIO:
            raise UploadError("The zip is compressed suspiciously well (a zip bomb?); it was not unpacked.")
        plan = []
        for member in members:
            if stat.S_ISLNK(member.external_attr >> 16):
                raise UploadError(f"The zip holds a symbolic link ({member.filename}); it was not unpacked.")
            path = _safe_member_path(member.filename)
            if path is not None and not path.name.startswith(".") and "__MACOSX" not in path.parts:
                plan.append((member, path))
        dest.mkdir(parents=True, exist_ok=False)
        root = dest.resolve()
        try:
            written = 0
            for member, path in plan:
                target = dest.joinpath(*path.parts)
                if not target.resolve().is_relative_to(root):  # belt and braces: never write outside dest
                    raise UploadError(f"The zip holds a path that points outside it ({member.filename}); "
                                      f"it was not unpacked.")
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "xb") as out:
                    # Count real bytes, not the sizes the header claims (a header can lie).
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_total_bytes:
                            raise UploadError("The zip unpacks to more than it says; it was not unpacked.")
                        out.write(chunk)
        except UploadError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
            # A damaged or encrypted member, an unsupported compression, a name the disk refuses, a full disk.
            shutil.rmtree(dest, ignore_errors=True)
            raise UploadError(f"The zip could not be unpacked ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                              f"nothing was kept.") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest
