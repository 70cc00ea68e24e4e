"""Shared test utilities: generated image folders whose classes a network can learn, odd image files, the one
"one sentence" assertion, the command line in a fresh process, and polling until something happens."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The browser the e2e tests drive (Debian's; Playwright downloads none).
CHROMIUM = os.environ.get("ALEXNET_STUDIO_CHROMIUM", "/usr/bin/chromium")
# Headless, and nothing that reaches for the network or a GPU.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# One clearly different dominant colour per class (up to ten classes).
CLASS_COLOURS = [
    (220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 220, 40), (200, 40, 200),
    (40, 210, 210), (240, 140, 20), (130, 130, 130), (120, 60, 20), (250, 250, 250),
]


def class_image(label: int, size: int | tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """An RGB image of class ``label``: the class colour, a stripe pattern whose period depends on the
    class, and noise, so that classes differ in colour and texture but no two images are the same."""
    width, height = (size, size) if isinstance(size, int) else size
    colour = np.array(CLASS_COLOURS[label % len(CLASS_COLOURS)], dtype=np.float64)
    stripes = ((np.arange(width) // (label % 4 + 1)) % 2 * 30.0)[None, :, None]
    noise = rng.normal(0, 20, (height, width, 3))
    pixels = np.clip(colour * 0.85 + stripes + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def make_image_folder(root: str | Path, classes: list[str] | int = 3, n_per_class: int | dict = 4,
                      size: int | tuple[int, int] = 16, splits: tuple[str, ...] | None = ("train", "val"),
                      fmt: str = "png", seed: int = 0) -> Path:
    """Writes root/<split>/<class>/<i>.<fmt> (or root/<class>/... when ``splits`` is None or empty).

    ``classes`` is a list of names or a count (class0, class1 ...); ``n_per_class`` a count, or a dict
    from split name to count. Returns ``root``.
    """
    root = Path(root)
    names = [f"class{i}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        count = n_per_class[split] if isinstance(n_per_class, dict) else n_per_class
        for label, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                class_image(label, size, rng).save(folder / f"{i:04d}.{fmt}")
    return root


def client_owner(client) -> str:
    """Whose runs a gradio_client.Client's calls make: an API client is a visitor by its session."""
    return f"session-{client.session_hash}"


def skip_or_fail(reason: str) -> None:
    """Skips with ``reason``; under CI (ALEXNET_STUDIO_REQUIRE=1) fails instead, so nothing is silently skipped."""
    if os.environ.get("ALEXNET_STUDIO_REQUIRE") == "1":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def assert_one_sentence(message, *words: str, end: str | tuple[str, ...] = (".", ")"), exact: bool = False) -> str:
    """Asserts the project's rule for refused input: one line, no traceback, no bare "exception", ending like a
    sentence (``end``), naming each of ``words`` (any case unless ``exact``). ``message`` is the text, an exception
    or a pytest.ExceptionInfo. Returns the text."""
    if isinstance(message, pytest.ExceptionInfo):
        message = message.value
    text = str(message)
    assert "\n" not in text and "Traceback" not in text and "exception" not in text.lower(), text
    assert text.rstrip().endswith(end), text
    for word in words:
        word = str(word)
        assert (word in text) if exact else (word.lower() in text.lower()), text
    return text


def run_cli(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m alexnet_core …`` in a fresh process from the repo root, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "alexnet_core", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def wait_for(condition, timeout: float = 120.0, every: float = 0.05) -> bool:
    """Polls ``condition()`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


# --- files a phone or browser may send as a photo ---------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def animated() -> bytes:
    frames = [class_image(0, 40, np.random.default_rng(1)), Image.new("RGB", (40, 40), "blue")]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def palette() -> bytes:
    image = class_image(2, 40, np.random.default_rng(2)).quantize(16)
    return encoded(image, "PNG", transparency=0)


def half_transparent(mode: str, colour) -> bytes:
    image = Image.new(mode, (40, 40), colour)
    image.paste(Image.new(mode, (20, 40), (0,) * len(colour)), (20, 0))
    return encoded(image, "PNG")


ODD_FILES = {
    "RGBA.png": lambda: half_transparent("RGBA", (200, 30, 30, 255)),
    "LA.png": lambda: half_transparent("LA", (128, 255)),
    "P.png": palette,
    "I16.png": lambda: encoded(Image.fromarray(np.linspace(0, 65535, 1600).astype(np.uint16).reshape(40, 40)), "PNG"),
    "F.tiff": lambda: encoded(Image.fromarray(np.linspace(0, 1, 1600, dtype=np.float32).reshape(40, 40)), "TIFF"),
    "CMYK.jpg": lambda: encoded(Image.new("CMYK", (40, 40), (0, 200, 200, 0)), "JPEG"),
    "animated.gif": animated,
    "1x1.png": lambda: encoded(Image.new("RGB", (1, 1), "orange"), "PNG"),
    "4000x12.png": lambda: encoded(Image.new("RGB", (4000, 12), "purple"), "PNG"),
    "12x4000.jpg": lambda: encoded(Image.new("RGB", (12, 4000), "purple"), "JPEG"),
    "grey.webp": lambda: encoded(Image.new("L", (50, 30), 90), "WEBP"),
}


@contextlib.contextmanager
def space_app(home: Path, **settings: str):
    """`python gradio_app.py` as a Hugging Face Space starts it (SYSTEM=spaces, SPACE_ID, the server's address),
    on a free local port, with ``home`` as its data folder and ``settings`` as extra environment variables (the
    Space's own defaults otherwise: the caller's ALEXNET_STUDIO_MAX_* are dropped). Yields (url, log path) once
    the app answers; stops it afterwards. The app's process id is in ``home``/app.pid (to read its memory)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Not the caller's ALEXNET_STUDIO_MAX_*, nor its GRADIO_TEMP_DIR (set when this process imported ui): the app
    # keeps Gradio's files under its own home, as a Space does, and counts only those against its disk bound.
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("ALEXNET_STUDIO_MAX_") and name != "GRADIO_TEMP_DIR"}
    env.update({"SYSTEM": "spaces", "SPACE_ID": "tester/alexnet-studio", "GRADIO_SERVER_NAME": "127.0.0.1",
                "GRADIO_SERVER_PORT": str(port), "ALEXNET_STUDIO_HOME": str(home),
                "GRADIO_ANALYTICS_ENABLED": "False", **settings})
    Path(home).mkdir(parents=True, exist_ok=True)
    log_path = Path(home) / "app.log"
    url = f"http://127.0.0.1:{port}/"
    with log_path.open("w") as log:
        app = subprocess.Popen([sys.executable, "gradio_app.py"], cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
        (Path(home) / "app.pid").write_text(str(app.pid))
        try:
            deadline = time.monotonic() + 300
            while True:
                assert app.poll() is None, f"the app exited ({app.returncode}):\n{log_path.read_text()}"
                try:
                    if httpx.get(url + "config", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"no answer in 5 min:\n{log_path.read_text()}"
                time.sleep(1)
            yield url, log_path
        finally:
            app.terminate()
            try:
                app.wait(30)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()


def call_by_index(url: str, fn_index: int, data: list, session_hash: str, timeout: float = 120,
                  warning_refuses: bool = False) -> tuple[bool, object]:
    """Calls an event by its function index over raw HTTP, as any client may (gradio_client refuses events whose
    ``api_name`` is False; the server does not). Returns (success, the outputs or the error message).
    ``warning_refuses``: the event says a refusal in a warning toast (and keeps its outputs as they were), so a
    warning counts as (False, its message)."""
    import json

    warnings = []

    joined = httpx.post(url + "gradio_api/queue/join", timeout=30,
                        json={"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None})
    joined.raise_for_status()
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session_hash},
                      timeout=timeout) as events:
        for line in events.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "log" and message.get("level") == "warning":
                warnings.append(message.get("log"))
            if message.get("msg") == "process_completed":
                if warning_refuses and warnings and message.get("success"):
                    return False, warnings[-1]
                output = message.get("output") or {}
                return bool(message.get("success")), output.get("data") if message.get("success") else \
                    output.get("error")
    raise AssertionError(f"no answer from event {fn_index}")


def app_dependency(url: str, *, output_label: str | None = None, input_label: str | None = None,
                   input_type: str | None = None) -> int:
    """The function index of the first event whose outputs hold a component labelled ``output_label`` and whose
    first input is labelled ``input_label`` (and of type ``input_type``), from the app's /config."""
    config = httpx.get(url + "config", timeout=30).json()
    components = {c["id"]: c for c in config["components"]}

    def label(component_id: int) -> str | None:
        return components[component_id].get("props", {}).get("label")

    for index, dependency in enumerate(config["dependencies"]):
        inputs, outputs = dependency["inputs"], dependency["outputs"]
        if output_label is not None and output_label not in map(label, outputs):
            continue
        if input_label is not None and not (inputs and label(inputs[0]) == input_label):
            continue
        if input_type is not None and not (inputs and components[inputs[0]]["type"] == input_type):
            continue
        return dependency.get("id", index)
    raise AssertionError(f"no event with output {output_label!r} and input {input_label!r}")
