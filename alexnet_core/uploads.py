"""Unpacking an uploaded zip of an ImageFolder, safely.

Nothing in the archive may land outside its destination (no absolute paths, no "..", no symlinks), and
caps on the number of files, their total size and the compression ratio stop zip bombs before a byte is
written.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_FILES = 50_000
MAX_TOTAL_BYTES = 2 << 30          # 2 GiB unpacked
MAX_RATIO = 200                    # unpacked / packed; images barely compress, bombs compress a millionfold


class UploadError(ValueError):
    """An upload that cannot be used, in one sentence."""


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The member's relative path, or None for a directory entry; UploadError for a path that escapes."""
    path = PurePosixPath(name.replace("\\", "/"))
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
        try:
            written = 0
            for member, path in plan:
                target = dest.joinpath(*path.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as out:
                    # Count real bytes, not the sizes the header claims (a header can lie).
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_total_bytes:
                            raise UploadError("The zip unpacks to more than it says; it was not unpacked.")
                        out.write(chunk)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest
