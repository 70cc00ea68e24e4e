"""The network while it learns: snapshots a training run takes of itself, as ConvNetJS's CIFAR-10 demo shows them.

A snapshot holds, at one moment of a run:
- conv1's weights (the filters that turn from noise into edge and colour detectors);
- for one photo (a validation image unless the visitor picks another), the most active feature maps of every
  conv layer;
- the current guesses on a fixed set of validation images (the same images all run long);
- at a validation, the validation confusion matrix (accuracy per class follows from it).

The loop (train.py) takes one at every validation and, in a long epoch, at least every SNAPSHOT_SECONDS. Its
tensors leave the device once per snapshot. Each is written to the run directory as
``snapshots/NNNN.safetensors`` (tensors and JSON metadata, nothing pickled), next to ``snapshots/images.safetensors``
(the fixed images and their labels), so a finished run, a resumed run and a reloaded page show them again. A run
keeps at most MAX_SNAPSHOTS files: beyond that every other older one is dropped, the first and the newest kept,
so a 1,000-epoch run stays within a few megabytes.

Rendering is here too: the filters, feature maps and guesses as images, and the filters' timeline as an
animated GIF.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from .checkpoints import SNAPSHOTS_FOLDER, atomic_write_bytes
from .explain import _forward, _grid, _unit_range, activation_grid
from .images import decode_image, enlarge
from .transforms import Preprocess, eval_transform

SNAPSHOT_SECONDS = 30.0   # in a long epoch, a snapshot at least this often
GUESS_IMAGES = 24         # the fixed validation images whose guesses are shown
TOP_CHANNELS = 8          # feature maps kept per conv layer: the most active channels for the photo
MAX_SNAPSHOTS = 120       # files a run keeps; older ones are thinned beyond this
IMAGES_FILE = "images.safetensors"


@dataclass
class Snapshot:
    """One moment of a run, on the CPU."""

    index: int                          # 1, 2, … in the order taken
    epoch: int                          # the epoch it was taken in (at a validation: the epoch validated)
    step: int                           # optimizer steps taken
    wall_time_s: float                  # training time so far
    conv1: torch.Tensor                 # float32 [out, in, k, k]
    features: dict[str, torch.Tensor]   # conv layer → float16 [TOP_CHANNELS, h, w], the photo's most active maps
    channels: dict[str, list[int]]      # conv layer → those maps' channel numbers
    guesses: torch.Tensor               # int64 [N]: the class guessed for each fixed image
    confidences: torch.Tensor           # float32 [N]: its probability
    confusion: torch.Tensor | None = None   # int64 [K, K] (true, guessed) on the validation split, at a validation
    val_acc: float | None = None

    @property
    def validated(self) -> bool:
        return self.confusion is not None

    def per_class(self, classes: list[str]) -> dict[str, float]:
        """Validation accuracy per class (recall), from the confusion matrix; classes without images left out."""
        if self.confusion is None:
            return {}
        totals = self.confusion.sum(1)
        return {c: float(self.confusion[i, i] / totals[i]) for i, c in enumerate(classes) if totals[i] > 0}

    def label(self) -> str:
        when = "the start" if self.step == 0 else f"epoch {self.epoch}" + ("" if self.validated else " (mid-epoch)")
        return f"{when} · step {self.step:,} · {self.wall_time_s:.0f} s"


@dataclass
class SnapshotImages:
    """The images every snapshot of a run looks at: fixed validation images (uint8 at store size) and the photo
    whose feature maps are shown."""

    images: torch.Tensor      # uint8 [N, C, S, S]
    labels: torch.Tensor      # int64 [N]
    classes: list[str]
    photo: torch.Tensor       # uint8 [C, S, S]
    paths: list[str] = field(default_factory=list)   # the images' files, where they have them


def choose_images(val_data, n: int = GUESS_IMAGES) -> SnapshotImages:
    """``n`` validation images spread over the classes (round robin, first images of each class), so that every
    class shows; the first one is the default photo."""
    labels = val_data.labels.cpu()
    by_class = [(labels == k).nonzero().flatten().tolist() for k in range(len(val_data.classes))]
    chosen: list[int] = []
    for rank in range(max((len(c) for c in by_class), default=0)):
        chosen += [c[rank] for c in by_class if rank < len(c)]
        if len(chosen) >= n:
            break
    chosen = chosen[:n]
    images = _images_at(val_data, chosen)
    paths = getattr(val_data, "paths", None) or []
    return SnapshotImages(images, labels[chosen], list(val_data.classes), images[0].clone(),
                          [paths[i] for i in chosen] if paths else [])


def _images_at(val_data, indices: list[int]) -> torch.Tensor:
    if hasattr(val_data, "images"):             # in memory: index it
        return val_data.images[torch.tensor(indices, device=val_data.images.device)].cpu()
    return torch.stack([decode_image(val_data.paths[i], val_data.pre) for i in indices])


@torch.no_grad()
def take(model: nn.Module, pre: Preprocess, images: SnapshotImages, *, index: int, epoch: int, step: int,
         wall_time_s: float, confusion: torch.Tensor | None = None, val_acc: float | None = None,
         channels_last: bool = False) -> Snapshot:
    """A snapshot of ``model`` (put in eval mode for the two forward passes, then back), with what it guesses for
    the fixed images and the photo's feature maps. The tensors leave the device once, together."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = eval_transform(images.images.to(device), pre)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        probabilities = torch.softmax(model(x).float(), dim=1)
        maps, _ = _forward(model, eval_transform(images.photo.to(device), pre))
    finally:
        model.train(was_training)
    confidences, guesses = probabilities.max(1)
    conv1 = next(m for m in model.features if isinstance(m, nn.Conv2d)).weight.detach().float().cpu().clone()
    features, channels = {}, {}
    for layer, fmap in maps.items():          # _forward gives them on the CPU already
        top = fmap.mean((1, 2)).argsort(descending=True)[:TOP_CHANNELS]
        features[layer], channels[layer] = fmap[top].half(), top.tolist()
    return Snapshot(index, epoch, step, round(wall_time_s, 1), conv1, features, channels, guesses.cpu(),
                    confidences.cpu(), None if confusion is None else confusion.cpu(), val_acc)


# --- On disk -------------------------------------------------------------------------------------------


def folder(run_dir: str | Path) -> Path:
    return Path(run_dir) / SNAPSHOTS_FOLDER


def save_images(run_dir: str | Path, images: SnapshotImages) -> None:
    tensors = {"images": images.images.contiguous(), "labels": images.labels.contiguous(),
               "photo": images.photo.contiguous()}
    meta = {"classes": json.dumps(images.classes), "paths": json.dumps([Path(p).name for p in images.paths])}
    folder(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder(run_dir) / IMAGES_FILE, save_tensors(tensors, metadata=meta))


def load_images(run_dir: str | Path) -> SnapshotImages | None:
    path = folder(run_dir) / IMAGES_FILE
    if not path.is_file():
        return None
    raw = path.read_bytes()
    tensors, meta = load_tensors(raw), _metadata(raw)
    return SnapshotImages(tensors["images"], tensors["labels"], json.loads(meta["classes"]), tensors["photo"],
                          json.loads(meta.get("paths", "[]")))


def set_photo(run_dir: str | Path, photo: torch.Tensor) -> None:
    """Makes ``photo`` (uint8 [C, S, S] at the run's store size) the one whose feature maps the next snapshots
    show."""
    images = load_images(run_dir)
    if images is not None:
        images.photo = photo
        save_images(run_dir, images)


def save(run_dir: str | Path, snapshot: Snapshot) -> Path:
    """Writes ``snapshot`` atomically as snapshots/NNNN.safetensors, then thins the run's files to MAX_SNAPSHOTS."""
    tensors = {"conv1": snapshot.conv1.contiguous(), "guesses": snapshot.guesses.contiguous(),
               "confidences": snapshot.confidences.contiguous()}
    tensors.update({f"features.{layer}": t.contiguous() for layer, t in snapshot.features.items()})
    if snapshot.confusion is not None:
        tensors["confusion"] = snapshot.confusion.contiguous()
    meta = {"snapshot": json.dumps({"index": snapshot.index, "epoch": snapshot.epoch, "step": snapshot.step,
                                    "wall_time_s": snapshot.wall_time_s, "val_acc": snapshot.val_acc,
                                    "channels": snapshot.channels, "layers": list(snapshot.features)})}
    folder(run_dir).mkdir(parents=True, exist_ok=True)
    path = folder(run_dir) / f"{snapshot.index:06d}.safetensors"
    atomic_write_bytes(path, save_tensors(tensors, metadata=meta))
    thin(run_dir)
    return path


def paths(run_dir: str | Path) -> list[Path]:
    """The run's snapshot files, oldest first."""
    return sorted(p for p in folder(run_dir).glob("[0-9]*.safetensors"))


def thin(run_dir: str | Path, keep: int = MAX_SNAPSHOTS) -> None:
    """Drops every other snapshot but the first and the newest while there are more than ``keep``."""
    files = paths(run_dir)
    while len(files) > keep:
        dropped = files[1:-1:2]
        for path in dropped:
            path.unlink(missing_ok=True)
        files = [p for p in files if p not in dropped]


def next_index(run_dir: str | Path) -> int:
    files = paths(run_dir)
    return int(files[-1].stem) + 1 if files else 1


def load(path: str | Path) -> Snapshot:
    raw = Path(path).read_bytes()
    tensors, info = load_tensors(raw), json.loads(_metadata(raw)["snapshot"])
    features = {layer: tensors[f"features.{layer}"] for layer in info["layers"]}
    return Snapshot(info["index"], info["epoch"], info["step"], info["wall_time_s"], tensors["conv1"], features,
                    {k: list(v) for k, v in info["channels"].items()}, tensors["guesses"], tensors["confidences"],
                    tensors.get("confusion"), info.get("val_acc"))


def load_all(run_dir: str | Path) -> list[Snapshot]:
    return [load(p) for p in paths(run_dir)]


def _metadata(raw: bytes) -> dict:
    """The JSON metadata of a safetensors file's header."""
    header_len = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + header_len]).get("__metadata__", {})


# --- As pictures ---------------------------------------------------------------------------------------


def filters_image(snapshot: Snapshot) -> Image.Image:
    """conv1's filters as a grid (RGB for three input channels, grey otherwise), as the Inside tab shows them."""
    weights = _unit_range(snapshot.conv1.float(), (1, 2, 3))
    if weights.shape[1] != 3:
        weights = weights.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    tiles = (weights.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    return _grid(tiles, 28)


def features_image(snapshot: Snapshot, layer: str) -> Image.Image:
    """The photo's most active maps of ``layer`` as a magma grid (explain.activation_grid)."""
    return activation_grid({layer: snapshot.features[layer].float()}, layer, top=TOP_CHANNELS).image


TILE = 72          # px: a guessed image's side in the guesses grid
CAPTION = 30       # px: the two caption lines under it
RIGHT, WRONG = (22, 140, 60), (205, 40, 40)   # frame colours: readable in light and dark pages alike


def guesses_image(snapshot: Snapshot, images: SnapshotImages, columns: int = 8) -> Image.Image:
    """The fixed images in a grid, each framed green when the current guess is right and red when wrong, with the
    guess and its probability (and, when wrong, the true class) written under it."""
    n = len(images.labels)
    rows = math.ceil(n / columns)
    cell_w, cell_h = TILE + 8, TILE + 8 + CAPTION
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(11)
    for i in range(n):
        x0, y0 = (i % columns) * cell_w, (i // columns) * cell_h
        guess, truth = int(snapshot.guesses[i]), int(images.labels[i])
        colour = RIGHT if guess == truth else WRONG
        draw.rectangle([x0 + 1, y0 + 1, x0 + TILE + 6, y0 + TILE + 6], outline=colour, width=3)
        pixels = images.images[i].permute(1, 2, 0).numpy()
        picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).convert("RGB")
        sheet.paste(enlarge(picture, TILE).resize((TILE, TILE)), (x0 + 4, y0 + 4))
        sure = f" {float(snapshot.confidences[i]):.0%}"    # how sure it is: this moves before the guess does
        mark = "✓ " if guess == truth else "✗ "
        draw.text((x0 + 2, y0 + TILE + 9), _fit(draw, mark + images.classes[guess], font, cell_w - 4 - int(
            draw.textlength(sure, font=font))) + sure, fill=colour, font=font)
        if guess != truth:
            draw.text((x0 + 2, y0 + TILE + 22), _fit(draw, f"is {images.classes[truth]}", font, cell_w - 4),
                      fill=(90, 90, 90), font=font)
    return sheet


def _font(size: int):
    """DejaVu Sans, which matplotlib ships (it has ✓ and ✗, Pillow's own font has not)."""
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def filters_animation(run_dir: str | Path, frame_ms: int = 400) -> bytes | None:
    """The filters' timeline as an animated GIF (one frame per snapshot, the epoch written on it), or None when
    the run has no snapshots."""
    frames = []
    for snapshot in load_all(run_dir):
        picture = filters_image(snapshot)
        framed = Image.new("RGB", (picture.width, picture.height + 18), "white")
        framed.paste(picture, (0, 18))
        ImageDraw.Draw(framed).text((4, 3), snapshot.label(), fill=(0, 0, 0), font=_font(12))
        frames.append(framed)
    if not frames:
        return None
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


def nbytes(snapshot: Snapshot) -> int:
    """What a snapshot's tensors take in memory."""
    tensors = [snapshot.conv1, snapshot.guesses, snapshot.confidences, *snapshot.features.values()]
    if snapshot.confusion is not None:
        tensors.append(snapshot.confusion)
    return sum(t.numel() * t.element_size() for t in tensors)


__all__ = ["Snapshot", "SnapshotImages", "choose_images", "take", "save", "save_images", "load", "load_all",
           "load_images", "paths", "thin", "next_index", "set_photo", "filters_image", "features_image",
           "guesses_image", "filters_animation", "nbytes"]
