"""Small shared test utilities: generated image folders whose classes a network can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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
