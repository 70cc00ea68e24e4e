"""Image data for training, evaluation and prediction: where images come from and how they are split.

Every image, whatever its source, becomes a square uint8 tensor at ``Preprocess.store_size`` through one
function, ``images.decode_image``; ``transforms.py`` turns batches of those into the network's input.
``Preprocess`` (transforms.py) is saved with each checkpoint, so training, evaluation and prediction always
prepare images alike.

Data sets (``data``, the first argument of ``load_split`` and its neighbours: a built-in name or a folder):
- ``cifar10``, ``fashion-mnist``: torchvision downloads them on first use; they are uint8 arrays already.
- ``flowers``: the flowers tutorial's flower_photos archive, downloaded, extracted and split train/val 9:1.
- any ImageFolder directory: DIR/train with DIR/val and/or DIR/test, or just DIR/<class>/ folders.

Split rules: a val folder is used when there is one; otherwise val is carved (seeded, per class) out of
train, and train then leaves exactly those images out, so test is never needed for model selection.
A directory of class folders only is split train/val/test (80/10/10 with the default val_fraction) for
training; evaluation measures a folder of labelled photos whole (``labelled_folder``, ``load_folder``).

Splits that fit in ``memory_limit_bytes`` are decoded once (in parallel, cached on disk with safetensors)
into an ``ImageData`` that lives on the training device; larger ones come as ``StreamingData``, which
decodes batches in DataLoader workers.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from .images import ImageError, decode_image, error_reason
from .models import ModelSpec
from .transforms import Preprocess, default_store_size, per_channel

__all__ = [
    "BUILTIN_DATA_NAMES", "DataError", "preprocess_for", "native_size", "ImageData", "StreamingData", "load_split",
    "class_names", "describe_data", "default_home", "labelled_folder", "load_folder",
]

BUILTIN_DATA_NAMES = ("cifar10", "fashion-mnist", "flowers")
SPLITS = ("train", "val", "test")
FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
FLOWERS_CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
VAL_FOLDER_NAMES = ("val", "valid", "validation")
# Bump when decode_image changes its pixels, so that old caches are not reused.
CACHE_VERSION = 1
# A split whose decoded images take more than this is streamed from its files instead of held in memory.
IN_MEMORY_LIMIT = 4 << 30


class DataError(ValueError):
    """A data set or split that cannot be used; the message is one sentence for the user."""




# --- What the network expects ------------------------------------------------------------------------





def preprocess_for(spec: ModelSpec, *, input_size: int | None = None, in_channels: int | None = None,
                   store_size: int | None = None, data: str | None = None,
                   root: str | Path | None = None) -> Preprocess:
    """The Preprocess for a model, with optional overrides.

    With ``data`` given and no ``store_size``, images smaller than the default store size (CIFAR-10's
    32, Fashion-MNIST's 28, a folder of thumbnails) are kept at their own size: upsampling them before
    storing would only spend memory; ``eval_transform`` resizes them to the input at batch time.
    """
    size = input_size or spec.input_size
    channels = in_channels or spec.in_channels
    if store_size is None:
        store_size = default_store_size(size)
        native = native_size(data, root) if data else None
        if native is not None and native < store_size:
            store_size = native
    return Preprocess(size, store_size, channels, per_channel(spec.mean, channels),
                      per_channel(spec.std, channels))




def native_size(data: str, root: str | Path | None = None) -> int | None:
    """The side of the data set's images when they all share one square size, else None.

    Opens image headers only: the first image of up to ten class folders.
    """
    if data == "cifar10":
        return 32
    if data == "fashion-mnist":
        return 28
    if data == "flowers":
        return None
    folder = _check_directory(data)
    top = _find_folder(folder, ("train",)) or folder
    sizes = set()
    for name in _class_folders(top)[:10]:
        with os.scandir(top / name) as entries:
            first = next((e.path for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS)), None)
        if first is not None:
            try:
                with Image.open(first) as img:
                    sizes.add(img.size)
            except (OSError, ValueError):
                return None
    if len(sizes) == 1:
        w, h = sizes.pop()
        return w if w == h else None
    return None


# --- Decoding one image ------------------------------------------------------------------------------













# --- Splits held in memory or streamed ------------------------------------------------------------------

@dataclass
class ImageData:
    """One split held in memory: uint8 images at store size, labels, class names and source files."""

    images: torch.Tensor  # uint8 [N, C, S, S], on CPU until .to(device)
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    paths: list[str] | None  # source file per image, where there is one

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(self.images.to(device), self.labels.to(device), self.classes, self.paths)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) batches on the data's device; the order comes from a CPU generator."""
        order = _order(len(self), shuffle, generator).to(self.images.device)
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size]
            yield self.images[index], self.labels[index]


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


DECODE_BATCH = 256   # images per batch when a split is decoded into memory
# A memory check a loader calls before decoding: (images, held in memory or streamed, decoded images in flight).
MemoryCheck = Callable[[int, bool, int], None]


def decode_workers(n: int) -> int:
    """Worker processes that decode ``n`` files into memory: starting them costs more than small sets take."""
    return _default_workers() if n >= 1000 else 0


def streaming_copies() -> int:
    """How many batches of a StreamingData are in memory at once: the one in use, and each worker's two."""
    return 2 * _default_workers() + 1


def decoding_window(n: int) -> int:
    """How many decoded images of ``n`` may be in memory at once besides the result while they are decoded: the
    batch being copied and each worker's two batches prefetched (DataLoader's default)."""
    return min(n, DECODE_BATCH * (2 * decode_workers(n) + 1))


@dataclass
class StreamingData:
    """A split too large for memory: the same uint8 batches as ImageData, decoded in DataLoader workers."""

    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    paths: list[str]
    pre: Preprocess
    num_workers: int = field(default_factory=_default_workers)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) batches on the CPU; the order comes from a CPU generator."""
        order = _order(len(self), shuffle, generator)
        for images, index in _decode_batches(self.paths, self.pre, order.tolist(), batch_size, drop_last,
                                             self.num_workers):
            yield images, self.labels[index]


def _order(n: int, shuffle: bool, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randperm(n, generator=generator) if shuffle else torch.arange(n)


class _FileDataset(torch.utils.data.Dataset):
    """Decodes file i for a DataLoader worker; a bad file comes back as its error, to be raised in the
    main process with a readable message rather than a worker traceback."""

    def __init__(self, paths: list[str], pre: Preprocess):
        self.paths, self.pre = paths, pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        try:
            return decode_image(self.paths[i], self.pre), i, ""
        except ImageError as error:
            side, channels = self.pre.store_size, self.pre.in_channels
            return torch.zeros((channels, side, side), dtype=torch.uint8), i, str(error)


def _decode_batches(paths: list[str], pre: Preprocess, order: list[int], batch_size: int, drop_last: bool,
                    num_workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(_FileDataset(paths, pre), batch_size=batch_size, sampler=order,
                                         drop_last=drop_last, num_workers=num_workers)
    for images, index, errors in loader:
        bad = next((e for e in errors if e), None)
        if bad:
            raise DataError(bad)
        yield images, index


def _decode_all(paths: list[str], pre: Preprocess, progress: Callable[[int, int], None] | None) -> torch.Tensor:
    """Decodes every file into one uint8 tensor, using all cores (worker processes: PIL holds the GIL)."""
    side = pre.store_size
    images = torch.empty((len(paths), pre.in_channels, side, side), dtype=torch.uint8)
    done = 0
    for batch, index in _decode_batches(paths, pre, list(range(len(paths))), DECODE_BATCH, False,
                                        decode_workers(len(paths))):
        images[index] = batch
        done += len(index)
        if progress:
            progress(done, len(paths))
    return images


# --- Data sets -----------------------------------------------------------------------------------------

def default_home() -> Path:
    """Where AlexNet Studio keeps downloads and caches: $ALEXNET_STUDIO_HOME or ~/.cache/alexnet_studio."""
    return Path(os.environ.get("ALEXNET_STUDIO_HOME", "~/.cache/alexnet_studio")).expanduser()


@dataclass
class _FileList:
    """Image files of one split, with labels, and the folder their relative paths (for the cache) hang off."""

    base: Path
    files: list[Path]
    labels: list[int]
    classes: list[str]

    def subset(self, index) -> _FileList:
        return _FileList(self.base, [self.files[i] for i in index], [self.labels[i] for i in index], self.classes)


def _check_directory(data: str | Path) -> Path:
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"The data directory {folder} does not exist (the built-in data sets are "
            f"{', '.join(BUILTIN_DATA_NAMES)})."
        )
    return folder


def _find_folder(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def _class_folders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(parent, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
    return sorted(found)


def _list_folder(folder: Path, base: Path, classes: list[str] | None = None) -> _FileList:
    """The images of an ImageFolder-style folder; labels follow ``classes`` (default: its own folders)."""
    own = _class_folders(folder)
    if not own:
        raise DataError(f"{folder} has no class folders (expected one sub-folder of images per class).")
    if classes is None:
        classes = own
    elif unknown := sorted(set(own) - set(classes)):
        raise DataError(f"{folder} has class folders that the training data lacks: {', '.join(unknown)}.")
    files, labels = [], []
    for name in own:
        found = _image_files(folder / name)
        files += found
        labels += [classes.index(name)] * len(found)
    if not files:
        raise DataError(f"{folder} has class folders but no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return _FileList(base, files, labels, classes)


def _split_per_class(labels: list[int] | np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Seeded, stratified split: part k+1 gets round(N * fractions[k]) images, drawn from every class in
    proportion to its size; part 0 gets the rest. Returns sorted index arrays."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    # Give each image a random rank within its class, as a fraction of the class size; taking the images
    # with the lowest ranks then takes the same share of every class, even when classes are small.
    rank = np.empty(len(labels))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    order = np.lexsort((rng.random(len(labels)), rank))  # ties between classes broken at random
    parts, start = [], 0
    for fraction in fractions:
        count = round(len(labels) * fraction)
        parts.append(np.sort(order[start:start + count]))
        start += count
    return [np.sort(order[start:])] + parts


def _folder_split(folder: Path, split: str, val_fraction: float, seed: int, with_test: bool = True,
                  test_fraction: float = 0.0) -> _FileList:
    """Applies the split rules (see the module docstring) to a directory. A directory of class folders
    only is split train/val/test, or train/val alone when ``with_test`` is False (flowers: 9:1).

    ``test_fraction`` > 0 holds out that share of train as the test split where there is no test folder
    (seeded and stratified like the validation split, and never overlapping it), so that a data set that
    comes as train/ and val/ still has photos nobody trained on or selected with.
    """
    train_folder = _find_folder(folder, ("train",))
    if train_folder is None:
        if split == "test" and not with_test and not test_fraction:
            raise DataError("The flowers data set has no test split: it is split into train and val only "
                            "(a test_fraction holds one out).")
        everything = _list_folder(folder, folder)
        test_share = test_fraction or (val_fraction if with_test else 0.0)
        parts = _split_per_class(everything.labels, (val_fraction, test_share), seed)
        return everything.subset(parts[SPLITS.index(split)])
    train = _list_folder(train_folder, folder)
    val_folder = _find_folder(folder, VAL_FOLDER_NAMES)
    test_folder = _find_folder(folder, ("test",))
    if test_folder is not None and test_fraction:
        raise DataError(f"{folder} has a test folder already; a test_fraction is only for data without one.")
    if split == "test" and test_folder is not None:
        return _list_folder(test_folder, folder, train.classes)
    if split == "test" and not test_fraction:
        raise DataError(f"{folder} has no test folder, so there is no test split (a test_fraction holds one "
                        f"out of train).")
    # What train gives up: the validation share where there is no val folder, the test share where asked.
    val_share = 0.0 if val_folder is not None else val_fraction
    kept, val, test = _split_per_class(train.labels, (val_share, test_fraction), seed)
    if split == "val" and val_folder is not None:
        return _list_folder(val_folder, folder, train.classes)
    return train.subset({"train": kept, "val": val, "test": test}[split])


def _flowers_folder(root: Path) -> Path:
    """root/flower_photos, downloaded and extracted on first use."""
    folder = root / "flower_photos"
    if folder.is_dir():
        return folder
    archive = root / "flower_photos.tgz"
    if not archive.is_file():
        from torchvision.datasets.utils import download_url

        try:
            download_url(FLOWERS_URL, str(root), archive.name)
        except Exception as error:  # network errors come in many types
            raise DataError(f"Could not download the flowers data set into {root} ({error_reason(error)}).") from None
    partial = root / "flower_photos.partial"
    try:
        with tarfile.open(archive) as tar:
            # filter="data" refuses absolute paths, "..", links out of the folder and device files.
            tar.extractall(partial, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"Could not extract {archive} ({error_reason(error)}).") from None
    if not (partial / "flower_photos").is_dir():
        raise DataError(f"{archive} does not contain a flower_photos folder.")
    os.replace(partial / "flower_photos", folder)  # only a complete extraction gets the real name
    partial.rmdir()
    return folder


def _builtin_dataset(data: str, train: bool, root: Path):
    """torchvision's CIFAR10 / FashionMNIST (downloaded on first use)."""
    import torchvision.datasets as datasets

    make = datasets.CIFAR10 if data == "cifar10" else datasets.FashionMNIST
    try:
        return make(str(root), train=train, download=True)
    except Exception as error:  # network and archive errors come in many types
        raise DataError(f"Could not get {describe_data(data)} into {root} ({error_reason(error)}).") from None


def _arrays_to_images(arrays: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """[N,H,W] or [N,H,W,3] uint8 → [N,C,S,S]; anything but the native format goes through decode_image,
    so that predicting on an exported picture gives exactly the pixels that training saw."""
    x = torch.from_numpy(np.ascontiguousarray(arrays))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if tuple(x.shape[1:]) == (pre.in_channels, pre.store_size, pre.store_size):
        return x.contiguous()
    return torch.stack([decode_image(Image.fromarray(a), pre) for a in arrays])


def _load_builtin(data: str, split: str, pre: Preprocess, val_fraction: float, seed: int, limit: int | None,
                  root: Path, memory_limit_bytes: int, check: MemoryCheck | None = None) -> ImageData:
    dataset = _builtin_dataset(data, split != "test", root)
    arrays, labels = np.asarray(dataset.data), np.asarray(dataset.targets, dtype=np.int64)
    index = np.arange(len(labels))
    if split != "test":
        kept, carved = _split_per_class(labels, (val_fraction,), seed)
        index = kept if split == "train" else carved
    index = _limit(index, limit, seed)
    if len(index) == 0:
        raise DataError(f"The {split} split of {describe_data(data)} is empty; use a larger val_fraction.")
    if check is not None:
        check(len(index), True, decoding_window(len(index)))
    needed = len(index) * pre.in_channels * pre.store_size ** 2
    if needed > memory_limit_bytes:
        raise DataError(f"{describe_data(data)} at store size {pre.store_size} needs "
                        f"{needed / 2**30:.1f} GiB, over the memory limit; use a smaller store size or a limit.")
    images = _arrays_to_images(arrays[index], pre)
    return ImageData(images, torch.from_numpy(labels[index]), list(dataset.classes), None)


def _limit(index: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of at most ``limit`` positions, in their original order."""
    if limit is None or limit >= len(index):
        return np.asarray(index)
    rng = np.random.default_rng([seed, 1])  # its own stream: independent of the val carving
    return np.sort(rng.choice(np.asarray(index), size=limit, replace=False))


# --- The cache -----------------------------------------------------------------------------------------

def _cache_key(files: _FileList, pre: Preprocess) -> str:
    """A hash of what the decoded pixels depend on: the files (path, size, mtime) and how they are decoded."""
    h = hashlib.sha256(f"v{CACHE_VERSION} pillow {PIL.__version__} {pre.store_size} {pre.in_channels}\n".encode())
    for path in files.files:
        stat = path.stat()
        h.update(f"{path.relative_to(files.base).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def cache_limit() -> int:
    """The most bytes the decoded-image cache may take on disk: $ALEXNET_STUDIO_MAX_CACHE_MB (2,000 MB by
    default). The cache is keyed by the files and the store size, so every run and evaluation of the same images
    shares one file; the least recently used files go first, and a split larger than half the bound is decoded
    without being cached."""
    text = os.environ.get(CACHE_LIMIT_ENV, "").strip()
    try:
        return int(float(text) * 10**6) if text else CACHE_LIMIT_DEFAULT
    except ValueError:
        raise DataError(f"{CACHE_LIMIT_ENV} must be a number of megabytes, not {text[:40]!r}.") from None


CACHE_LIMIT_ENV = "ALEXNET_STUDIO_MAX_CACHE_MB"
CACHE_LIMIT_DEFAULT = 2000 * 10**6


def _trim_cache(cache_dir: Path, limit: int, keep: Path) -> None:
    """Removes the least recently used cache files until the cache holds at most ``limit`` bytes."""
    files = []
    for entry in cache_dir.glob("images-*.safetensors"):
        try:
            stat = entry.stat()
        except OSError:   # removed by another process meanwhile
            continue
        files.append((stat.st_mtime, stat.st_size, entry))
    total = sum(size for _, size, _ in files)
    for _, size, entry in sorted(files):
        if total <= limit:
            break
        if entry != keep:
            entry.unlink(missing_ok=True)
            total -= size


def _cached_decode(files: _FileList, pre: Preprocess, cache_dir: Path,
                   progress: Callable[[int, int], None] | None) -> torch.Tensor:
    path = cache_dir / f"images-{_cache_key(files, pre)}.safetensors"
    expected = (len(files.files), pre.in_channels, pre.store_size, pre.store_size)
    if path.is_file():
        try:
            images = load_file(path)["images"]
            if tuple(images.shape) == expected and images.dtype == torch.uint8:
                os.utime(path)   # recently used: the last file the cache's bound removes
                if progress:
                    progress(len(images), len(images))
                return images
        except Exception:  # a damaged cache file is simply decoded again
            pass
    images = _decode_all([str(p) for p in files.files], pre, progress)
    limit = cache_limit()
    if images.numel() > limit // 2:   # would push out everything else: decoded for this use only
        return images
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    save_file({"images": images}, str(partial), metadata={"source": str(files.base)})
    os.replace(partial, path)  # readers never see half a file
    _trim_cache(cache_dir, limit, keep=path)
    return images


# --- The public entry points ---------------------------------------------------------------------------

def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_seed_and_limit(seed, limit) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"seed must be a whole number from 0, not {seed!r}.")
    if limit is not None and (not _is_number(limit) or limit < 1):
        raise DataError(f"limit must be at least 1, not {limit!r}.")


def load_split(data: str, split: str, pre: Preprocess, *, val_fraction: float = 0.1, seed: int = 0,
               test_fraction: float = 0.0, limit: int | None = None, root: str | Path | None = None,
               cache_dir: str | Path | None = None,
               memory_limit_bytes: int = IN_MEMORY_LIMIT,
               progress: Callable[[int, int], None] | None = None,
               check: MemoryCheck | None = None) -> ImageData | StreamingData:
    """One split ("train", "val" or "test") of a data set, in memory when it fits, else streaming.

    ``root`` is where downloads go (default: default_home()/data); ``cache_dir`` where decoded folders are
    cached (default: default_home()/cache). ``limit`` takes a seeded random subset of at most that many
    images. ``progress(done, total)`` is called while images are decoded. ``check(images, held, decoding)`` is
    called once the images are known and before any is decoded (a memory check that may raise): how many,
    whether they will be held in memory, and how many decoded images may be in flight while they are decoded.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split '{split}': choose one of {', '.join(SPLITS)}.")
    # Checked for type too: a checkpoint's recorded config (evaluate reads its split from it) may say anything.
    if not _is_number(val_fraction) or not 0 < val_fraction <= 0.5:
        raise DataError(f"val_fraction must be above 0 and at most 0.5, not {val_fraction!r}.")
    if not _is_number(test_fraction) or not 0 <= test_fraction <= 0.5:
        raise DataError(f"test_fraction must be at least 0 and at most 0.5, not {test_fraction!r}.")
    _check_seed_and_limit(seed, limit)
    root = Path(root).expanduser() if root is not None else default_home() / "data"
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_home() / "cache"

    if data in ("cifar10", "fashion-mnist"):
        return _load_builtin(data, split, pre, val_fraction, seed, limit, root, memory_limit_bytes, check)
    if data == "flowers":
        root.mkdir(parents=True, exist_ok=True)
        files = _folder_split(_flowers_folder(root), split, val_fraction, seed, with_test=False,
                              test_fraction=test_fraction)
    else:
        files = _folder_split(_check_directory(data), split, val_fraction, seed, test_fraction=test_fraction)
    files = files.subset(_limit(np.arange(len(files.files)), limit, seed))
    if not files.files:
        raise DataError(f"The {split} split of {describe_data(data)} is empty; use a larger val_fraction "
                        f"or more images.")
    return _load_files(files, pre, cache_dir, progress, memory_limit_bytes, check)


def _load_files(files: _FileList, pre: Preprocess, cache_dir: Path, progress: Callable[[int, int], None] | None,
                memory_limit_bytes: int, check: MemoryCheck | None = None) -> ImageData | StreamingData:
    labels = torch.tensor(files.labels, dtype=torch.int64)
    paths = [str(p) for p in files.files]
    held = len(paths) * pre.in_channels * pre.store_size ** 2 <= memory_limit_bytes
    if check is not None:
        check(len(paths), held, decoding_window(len(paths)))
    if not held:
        return StreamingData(labels, files.classes, paths, pre)
    return ImageData(_cached_decode(files, pre, cache_dir, progress), labels, files.classes, paths)


BUILTIN_TRAIN_SIZES = {"cifar10": 50_000, "fashion-mnist": 60_000}
FLOWERS_SIZE = 3_670


def split_sizes(data: str, *, val_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 0,
                limit: int | None = None, root: str | Path | None = None) -> tuple[int, int]:
    """How many images load_split would give for train and val, without decoding or sorting any: the image
    files are counted and the split rules' arithmetic applied (the built-in data sets' sizes are known)."""
    cap = (lambda n: n if limit is None else min(n, limit))
    carve = (lambda n, fraction: round(n * fraction))   # _split_per_class's part sizes
    if data in BUILTIN_TRAIN_SIZES:
        total = BUILTIN_TRAIN_SIZES[data]
        return cap(total - carve(total, val_fraction)), cap(carve(total, val_fraction))
    if data == "flowers":
        folder = (Path(root).expanduser() if root is not None else default_home() / "data") / "flower_photos"
        total = _count_images(folder) if folder.is_dir() else FLOWERS_SIZE   # not downloaded yet: its size
        val, test = carve(total, val_fraction), carve(total, test_fraction)
        return cap(total - val - test), cap(val)
    folder = _check_directory(data)
    train_folder = _find_folder(folder, ("train",))
    if train_folder is None:   # class folders only: train/val/test
        total = _count_images(folder)
        val, test = carve(total, val_fraction), carve(total, test_fraction or val_fraction)
        return cap(total - val - test), cap(val)
    total = _count_images(train_folder)
    val_folder = _find_folder(folder, VAL_FOLDER_NAMES)
    val = _count_images(val_folder) if val_folder is not None else carve(total, val_fraction)
    kept = total - (0 if val_folder is not None else val) - carve(total, test_fraction)
    return cap(kept), cap(val)


def _count_images(folder: Path) -> int:
    """The image files in the class folders of ``folder``, counted as _list_folder would find them."""
    count = 0
    for name in _class_folders(folder):
        for _, dirs, names in os.walk(folder / name, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            count += sum(1 for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
    return count


def labelled_folder(data: str, split: str) -> Path | None:
    """The folder that evaluating ``split`` of ``data`` measures whole, or None where the split rules apply.

    A directory without a train/ folder is a folder of someone's labelled photos, not a data set to split:
    its test/ folder for the test split (val/, valid/ or validation/ for val) when it has one, else the
    directory itself, read as class folders (DIR/<class>/...). Training still splits such a directory.
    """
    if data in BUILTIN_DATA_NAMES:
        return None
    folder = _check_directory(data)
    if _find_folder(folder, ("train",)) is not None:
        return None
    named = _find_folder(folder, {"test": ("test",), "val": VAL_FOLDER_NAMES}.get(split, ()))
    if named is not None:
        return named
    own = _class_folders(folder)
    if own and all(name in ("test", *VAL_FOLDER_NAMES) for name in own):
        raise DataError(f"{folder} has no {split} folder, only {', '.join(n + '/' for n in own)}: "
                        f"pick the split it holds.")
    return folder


def load_folder(folder: str | Path, pre: Preprocess, classes: list[str], *, limit: int | None = None,
                seed: int = 0, cache_dir: str | Path | None = None, memory_limit_bytes: int = IN_MEMORY_LIMIT,
                progress: Callable[[int, int], None] | None = None,
                check: MemoryCheck | None = None) -> tuple[ImageData | StreamingData, int]:
    """Every image of a folder of class folders (FOLDER/<class>/...), labelled by their place in ``classes``
    (a model's classes: the folder may hold some of them only), or a seeded sample of ``limit`` of them.
    Returns the data and how many images the folder holds in all. ``check``: as load_split's."""
    folder = Path(folder)
    files = _list_folder(folder, folder, list(classes))
    total = len(files.files)
    _check_seed_and_limit(seed, limit)
    files = files.subset(_limit(np.arange(total), limit, seed))
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_home() / "cache"
    return _load_files(files, pre, cache_dir, progress, memory_limit_bytes, check), total


def class_names(data: str, root: str | Path | None = None) -> list[str]:
    """The class names of a data set, in label order, without decoding anything."""
    if data == "cifar10":
        return list(CIFAR10_CLASSES)
    if data == "fashion-mnist":
        return list(FASHION_CLASSES)
    if data == "flowers":
        return list(FLOWERS_CLASSES)
    folder = _check_directory(data)
    top = _find_folder(folder, ("train",)) or folder
    classes = _class_folders(top)
    if not classes:
        raise DataError(f"{top} has no class folders (expected one sub-folder of images per class).")
    return classes


def describe_data(data: str) -> str:
    """A human-readable name for logs and checkpoint metadata."""
    names = {"cifar10": "CIFAR-10 (torchvision)", "fashion-mnist": "Fashion-MNIST (torchvision)",
             "flowers": "flower_photos (TensorFlow flowers tutorial)"}
    return names.get(data) or f"ImageFolder {Path(data).expanduser().resolve()}"
