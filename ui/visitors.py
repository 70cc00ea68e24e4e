"""Whose work a request is, and where it is kept.

A visitor is a random id their browser keeps (gr.BrowserState); an API client, which has no browser, is its
session; a direct call from Python is LOCAL, the server's own. Each visitor's runs, uploads and checkpoints live
in a folder of their own, and the sentences the page shows name files, not server paths.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

import gradio as gr

from alexnet_core.runner import LOCAL

from . import settings

_VISITOR_ID = re.compile(r"[0-9a-f]{32}")


def remember_visitor(saved: str | None) -> tuple[str, str]:
    """On page load: the visitor's id as their browser keeps it (gr.BrowserState), or a new random one for a
    first visit; a reload therefore finds the same runs and uploads. Returns it for the page's gr.State and
    for the browser to keep."""
    visitor = saved if isinstance(saved, str) and _VISITOR_ID.fullmatch(saved) else secrets.token_hex(16)
    return visitor, visitor


def owner_of(visitor: str | None, request: gr.Request | None = None) -> str:
    """Whose work this is: the page's visitor id; for an API client, which has no browser, its session (one
    gradio_client.Client is one visitor); LOCAL for a direct call from Python."""
    if visitor:
        return visitor
    if request is not None and getattr(request, "session_hash", None):
        return f"session-{request.session_hash}"
    return LOCAL


def visitor_folder(owner: str) -> Path | None:
    """Where a visitor's runs, uploads and checkpoints go (a hash of their id: any id makes a safe name);
    None for LOCAL, whose runs and uploads are the server's own (settings.RUNS_DIR, settings.UPLOADS_DIR)."""
    if owner == LOCAL:
        return None
    return settings.VISITORS_DIR / hashlib.sha256(owner.encode()).hexdigest()[:24]


def runs_dir(owner: str) -> Path:
    folder = visitor_folder(owner)
    return settings.RUNS_DIR if folder is None else folder / "runs"


def uploads_dir(owner: str) -> Path:
    folder = visitor_folder(owner)
    return settings.UPLOADS_DIR if folder is None else folder / "uploads"


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def uploaded_bytes(owner: str | None = None) -> int:
    """The disk that uploads take: one visitor's (data sets and checkpoints), or every visitor's."""
    if owner is None:
        return sum(_uploaded_bytes_of(folder) for folder in settings.VISITORS_DIR.glob("*") if folder.is_dir())
    folder = visitor_folder(owner)
    return _uploaded_bytes_of(folder) if folder is not None else 0


def _uploaded_bytes_of(folder: Path) -> int:
    return _folder_bytes(folder / "uploads") + _folder_bytes(folder / "checkpoints")


def upload_room(owner: str) -> int | None:
    """How many more bytes this visitor may upload (None: no bound); gr.Error when there is no room."""
    rooms = []
    if settings.SHARING.upload_mb_per_visitor:
        rooms.append(settings.SHARING.upload_mb_per_visitor * 10**6 - uploaded_bytes(owner))
    if settings.SHARING.upload_mb_per_server:
        rooms.append(settings.SHARING.upload_mb_per_server * 10**6 - uploaded_bytes())
    room = min(rooms) if rooms else None
    if room is not None and room <= 0:
        raise gr.Error("There is no room for more uploads on this server: its upload space (stated in the Train "
                       "tab) is full. Train on a built-in data set, or run AlexNet Studio on your own machine.")
    return room


def run_count(owner: str | None = None) -> int:
    if owner is not None:
        folder = runs_dir(owner)
        return sum(1 for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else 0
    return sum(1 for p in settings.VISITORS_DIR.glob("*/runs/*") if p.is_dir())


def file_name(path: str) -> str:
    """The user's name for an upload: Gradio keeps it as the cached file's name."""
    return Path(path).name


def checkpoint_name(path: str | Path) -> str:
    """How the page names a checkpoint: a run's best.safetensors by its run's name, as its download is named
    (``<run name>-best.safetensors``); any other file by its own name."""
    path = Path(path)
    return f"{path.parent.name}-best.safetensors" if path.name == "best.safetensors" and path.parent.name \
        else path.name


def for_the_page(message: str) -> str:
    """A message from the library, as a visitor of the page should read it: files under the app's folders by
    their names, not server paths; what to do in the browser, not on the command line."""
    roots = {settings.VISITORS_DIR, settings.UPLOADS_DIR, settings.RUNS_DIR, settings.STUDIO_HOME}
    for root in sorted(roots, key=lambda p: -len(str(p))):  # the deepest first
        message = re.sub(re.escape(str(root)) + r"[^\s,;:()]*", lambda m: checkpoint_name(m.group()) or m.group(),
                         message)
    return message.replace("; --resume continues the run.",
                           ": download it below, or use it in Predict, Evaluate and Inside.")
