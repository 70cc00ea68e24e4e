"""Who a visitor is for the server's caps, and the disk the app takes: bounds that hold whatever a client does.

Caps count an *identity* that a client cannot renew by opening a new session: the Hugging Face user where the
visitor has signed in (gr.LoginButton, a Space with ``hf_oauth``), otherwise the client's address. On a Space
that address is the last X-Forwarded-For entry, the one the Space's proxy appends; entries before it come from
the client, which can write anything there, and the connection itself comes from the proxy. Off a Space the
address is the connection's own. Each visitor folder records the identity that made it (``.identity``), so that
the caps add up every folder of one identity.

The disk the app counts is its visitors' folders and Gradio's upload folder (``used_bytes``). Before new work
(a run, an upload) takes room, ``make_room`` removes the oldest runs and uploads of visitors no longer around
(not seen for ``SharingLimits.away_minutes`` and with no run going) until the work fits the server's bound, or
refuses it in one sentence. ``UploadGuard`` does the same for Gradio's own upload route, and rate-limits it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections import defaultdict, deque
from contextlib import contextmanager
from pathlib import Path

import anyio
import gradio as gr
from gradio.utils import get_upload_folder

from alexnet_core.runner import LOCAL, RUNNER

from . import settings

MB = 10**6
IDENTITY_FILE = ".identity"
_LOCK = threading.RLock()
_SEEN: dict[str, float] = {}      # visitor folder name -> when its visitor last made a request
_OWNERS: dict[str, str] = {}      # visitor folder name -> owner (to ask the runner whether their run goes on)
_reserved = 0                     # bytes of uploads still streaming in (UploadGuard), counted as taken
_ACTIONS: dict[tuple, deque] = defaultdict(deque)  # (kind, identity) -> times of its recent runs or uploads


class NoRoomError(ValueError):
    """There is no room on the server's disk for a piece of work, in one sentence."""


# --- identity --------------------------------------------------------------------------------------------------


def client_address(headers, peer: str | None) -> str:
    """The client's address: on a Space the last X-Forwarded-For entry (set by the Space's proxy), else the peer."""
    if settings.ON_SPACE:
        last = (headers.get("x-forwarded-for") or "").split(",")[-1].strip()
        if last:
            return last
    return peer or "unknown"


def signed_in_user(request) -> str | None:
    """The Hugging Face user this request comes from (gr.LoginButton's session), None when not signed in."""
    try:
        info = request.session.get("oauth_info") or {}  # gr.Request passes .session to the Starlette request
    except (AttributeError, AssertionError, KeyError):    # no SessionMiddleware: OAuth is not set up
        return None
    return (info.get("userinfo") or {}).get("preferred_username") or None


def identity_of(request) -> str:
    """What the per-visitor caps count for this request: ``user:<name>``, ``address:<ip>``, or LOCAL."""
    if request is None or getattr(request, "headers", None) is None:
        return LOCAL
    user = signed_in_user(request)
    if user:
        return f"user:{user}"
    client = getattr(request, "client", None)
    return "address:" + client_address(request.headers, getattr(client, "host", None))


def _key(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


def seen(owner: str, folder: Path | None) -> None:
    """Notes that ``owner`` (whose folder is ``folder``) is around now."""
    if folder is not None:
        with _LOCK:
            _SEEN[folder.name], _OWNERS[folder.name] = time.time(), owner


def claim(folder: Path | None, request) -> str:
    """Creates a visitor's folder for new work and marks it with the identity of the request that made it first
    (a visitor id never moves to another identity); returns the identity the caps count for this request."""
    identity = identity_of(request)
    if folder is not None and identity != LOCAL:
        folder.mkdir(parents=True, exist_ok=True)
        mark = folder / IDENTITY_FILE
        if not mark.exists():
            mark.write_text(_key(identity))
    return identity


def identity_folders(identity: str) -> list[Path]:
    """Every visitor folder made by ``identity`` (whichever session or visitor id it used)."""
    key = _key(identity)
    return [mark.parent for mark in settings.VISITORS_DIR.glob(f"*/{IDENTITY_FILE}") if _read(mark) == key]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def signed_in(identity: str) -> bool:
    return identity.startswith("user:")


def per_identity(bound: int | None, identity: str) -> int | None:
    """A per-visitor bound for ``identity``: signed-in users get ``signed_in_factor`` times as much."""
    return bound * settings.SHARING.signed_in_factor if bound and signed_in(identity) else bound


def check_rate(identity: str, uploads: bool = False) -> None:
    """Counts one run or zip upload (``uploads``: one file upload) of ``identity``; gr.Error when it has made its
    allowance (SharingLimits.runs_per_minute, uploads_per_minute) in the last minute."""
    allowed = settings.SHARING.uploads_per_minute if uploads else settings.SHARING.runs_per_minute
    what = "file uploads" if uploads else "runs and zip uploads"
    if not allowed or identity == LOCAL:
        return
    with _LOCK:
        times, now = _ACTIONS[what, identity], time.monotonic()
        while times and times[0] < now - 60:
            times.popleft()
        if len(times) >= allowed:
            raise gr.Error(f"This server takes at most {allowed} {what} a minute from one address; try again in "
                           f"{60 - (now - times[0]):.0f} s.")
        times.append(now)


def check_recent_bytes(identity: str, size: int) -> None:
    """One address's share of Gradio's upload folder: what it sent within the cache's lifetime (after which
    Gradio deletes it) stays within the per-visitor upload room; gr.Error beyond."""
    bound = settings.SHARING.upload_mb_per_visitor
    if not bound:
        return
    with _LOCK:
        sent, now = _ACTIONS["bytes", identity], time.monotonic()
        while sent and sent[0][0] < now - settings.CACHE_SECONDS:
            sent.popleft()
        if sum(n for _, n in sent) + size > bound * MB:
            raise gr.Error(f"This address has sent {bound:,} MB of uploads in the last {settings.CACHE_SECONDS:,} s, "
                           f"as much as this server takes from one; try again later.")
        sent.append((now, size))


# --- disk ------------------------------------------------------------------------------------------------------


def gradio_folder() -> Path:
    return Path(get_upload_folder())


def _size(path: Path, counted: set) -> int:
    """Bytes under ``path`` (a file or a folder), each file once however many hard links it has."""
    total = 0
    for item in [path] if path.is_file() else path.rglob("*"):
        try:
            st = item.lstat()
        except OSError:
            continue
        if item.is_file() and (st.st_dev, st.st_ino) not in counted:
            counted.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def used_bytes() -> int:
    """The disk the app's visitors take: their folders and Gradio's upload folder (hard links counted once)."""
    counted: set = set()
    return sum(_size(folder, counted) for folder in (settings.VISITORS_DIR, gradio_folder()) if folder.exists())


def _around(folder_name: str) -> bool:
    with _LOCK:
        last, owner = _SEEN.get(folder_name, 0.0), _OWNERS.get(folder_name)
    if time.time() - last < settings.SHARING.away_minutes * 60:
        return True
    return owner is not None and RUNNER.snapshot(owner).active


def _removable() -> list[Path]:
    """Runs, uploaded data sets and uploaded checkpoints of visitors no longer around, the oldest first."""
    items = []
    for folder in settings.VISITORS_DIR.glob("*"):
        if folder.is_dir() and not _around(folder.name):
            items += [p for kind in ("runs", "uploads", "checkpoints") for p in (folder / kind).glob("*")]
    return sorted(items, key=lambda p: p.stat().st_mtime if p.exists() else 0)


_serving_since: float | None = None  # the first upload: files Gradio cached before it are the app's own (examples)


def _note_serving() -> None:
    global _serving_since
    if _serving_since is None:
        _serving_since = time.time() - 1


def _stale_gradio_files(grace_s: float = 10) -> list[Path]:
    """Files visitors put in Gradio's upload folder, older than ``grace_s`` (an upload is used within seconds),
    oldest first; never the app's own (its examples, cached before the first upload)."""
    now, since = time.time(), _serving_since or time.time()
    files = [p for p in gradio_folder().rglob("*") if p.is_file()] if gradio_folder().exists() else []
    return sorted((p for p in files if since < p.stat().st_mtime < now - grace_s), key=lambda p: p.stat().st_mtime)


REMOVED_NOTE = ("When its disk runs low, this server removes the oldest runs and uploads of visitors who are no "
                "longer around: download what you want to keep.")
removed_count = 0  # how many runs and uploads make_room has removed since the server started


@contextmanager
def reserved(needed: int, what: str):
    """Room for ``needed`` bytes made (make_room) and held while the work inside writes them: work going at
    the same time cannot take it too."""
    global _reserved
    make_room(needed, what, reserve=True)
    try:
        yield
    finally:
        with _LOCK:
            _reserved -= needed if settings.SHARING.disk_mb_per_server else 0


def make_room(needed: int, what: str, held: int = 0, reserve: bool = False) -> None:
    """Makes ``needed`` bytes of room within the server's disk bound, beside ``held`` bytes promised to work
    going and the room ``reserved`` for work writing now, removing old files of visitors no longer around (then
    old files in Gradio's upload folder); NoRoomError naming ``what`` when it cannot. ``reserve``: hold the room
    (for ``reserved``, which hands it back)."""
    global removed_count, _reserved
    bound = settings.SHARING.disk_mb_per_server
    if not bound:
        return
    bound *= MB
    if needed > bound:
        raise NoRoomError(f"{what} needs {needed / MB:,.0f} MB, more than this server's disk bound of "
                          f"{bound / MB:,.0f} MB.")
    with _LOCK:  # one at a time: two pieces of work never both take the same room
        used = used_bytes() + _reserved + held
        for item in (_removable() + _stale_gradio_files()) if used + needed > bound else []:
            size = _size(item, set())
            shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
            removed_count += 1
            used -= size
            if used + needed <= bound:
                break
        if used + needed <= bound:
            _reserved += needed if reserve else 0
            return
    raise NoRoomError(f"This server's disk is full with the work of visitors who are still here, so {what} does not "
                      f"fit now; try again in {settings.SHARING.away_minutes:g} minutes.")


def remove_oldest_run() -> bool:
    """Removes the oldest run of a visitor no longer around (for the server's cap on runs); False if none."""
    global removed_count
    with _LOCK:
        run = next((p for p in _removable() if p.parent.name == "runs"), None)
        if run is None:
            return False
        shutil.rmtree(run, ignore_errors=True)
        removed_count += 1
        return True


def run_bytes(model: str, data: str | None = None) -> int:
    """What a run of ``model`` may write: best and last weights, and two optimizer slots in last, in float32; its
    last layer as wide as the data folder's classes (a zip may hold thousands) or the model's default."""
    import torch

    from alexnet_core.models import get_spec

    spec, classes = get_spec(model), 0
    if data and Path(data).is_dir():
        top = Path(data) / "train" if (Path(data) / "train").is_dir() else Path(data)
        classes = sum(1 for p in top.iterdir() if p.is_dir())
    with torch.device("meta"):
        net = spec.build(num_classes=classes) if classes else spec.build()
        params = sum(p.numel() for p in net.parameters())
    return 4 * params * 4 + MB


_GOING: dict[str, tuple[str, int]] = {}  # run folder -> (owner, bytes it may write): room held for runs going


def _held_for_runs() -> int:
    """Room still held for the runs going: what each may write less what it has written."""
    with _LOCK:
        going = list(_GOING.items())
    held = 0
    for out, (owner, need) in going:
        if RUNNER.snapshot(owner).active:
            held += max(0, need - (_size(Path(out), set()) if Path(out).exists() else 0))
        else:
            _GOING.pop(out, None)
    return held


def make_room_for_run(model: str, data: str, out: str, owner: str) -> None:
    """Refuses a run whose files would pass the per-run bound; makes room for it on the server's disk, beside
    the room held for the runs going, and holds it while the run goes."""
    need = run_bytes(model, data)
    if settings.SHARING.run_mb and need > settings.SHARING.run_mb * MB:
        raise NoRoomError(f"A run of {model} writes up to {need / MB:,.0f} MB of checkpoints; this server keeps "
                          f"runs of at most {settings.SHARING.run_mb:,} MB. Pick a smaller model.")
    make_room(need, "your run", held=_held_for_runs())
    with _LOCK:
        _GOING[out] = (owner, need)


def download_copy(path: str | None, name: str | None = None) -> str | None:
    """A run's checkpoint as Gradio serves it: a hard link (a copy where links fail) in Gradio's upload folder,
    which Gradio serves as an attachment to whoever has its unguessable path, named ``name`` (default: the
    file's own name); None when there is none."""
    if not path or not Path(path).is_file():
        return None
    source = Path(path)
    stamp = f"{source.resolve()}:{source.stat().st_mtime_ns}"
    target = gradio_folder() / "downloads" / hashlib.sha256(stamp.encode()).hexdigest()[:32] / (name or source.name)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            os.link(source, staging)
        except OSError:
            shutil.copyfile(source, staging)
        os.replace(staging, target)
    return str(target)


# --- Gradio's own upload route -----------------------------------------------------------------------------------


class UploadGuard:
    """ASGI middleware in front of Gradio's routes. Its upload route: per-address uploads a minute, and room on
    the disk for the upload (by its Content-Length, else Gradio's per-file cap, held while it streams in) before a
    byte is read. Its file route: every answer says ``nosniff`` and ``sandbox``, so that even a file a browser
    would render runs no script on the app's origin. Anything else passes."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/upload"):
            return await self._upload(scope, receive, send)
        if "/file=" in scope["path"]:
            async def send_guarded(message):
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff"),
                                          (b"content-security-policy", b"sandbox")]
                await send(message)
            return await self.app(scope, receive, send_guarded)
        return await self.app(scope, receive, send)

    async def _upload(self, scope, receive, send):
        global _reserved
        _note_serving()
        from starlette.datastructures import Headers
        from starlette.responses import PlainTextResponse

        headers = Headers(scope=scope)
        identity = "address:" + client_address(headers, (scope.get("client") or ("unknown",))[0])
        try:
            check_rate(identity, uploads=True)
            size = int(headers.get("content-length") or 0) or settings.max_upload_bytes()
            check_recent_bytes(identity, size)
            await anyio.to_thread.run_sync(make_room, size, "this upload", 0, True)
        except (gr.Error, NoRoomError, ValueError) as error:
            status = 429 if isinstance(error, gr.Error) else 507
            return await PlainTextResponse(getattr(error, "message", None) or str(error), status_code=status)(
                scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            with _LOCK:
                _reserved -= size if settings.SHARING.disk_mb_per_server else 0
