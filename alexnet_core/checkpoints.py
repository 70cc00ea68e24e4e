"""Saving and loading checkpoints safely: safetensors files, written atomically, never unpickled.

A training run directory holds two files:

* ``best.safetensors``: the weights with the best validation accuracy, plus everything prediction needs
  (model name, class names, input size, mean/std, …) as JSON in the safetensors header.
* ``last.safetensors``: a resumable training state: weights, optimizer tensors and RNG state as tensors,
  the rest (optimizer settings, scheduler state, epoch, history, …) as JSON in the header.

Both are written to a temporary file in the same directory and then renamed over the old one, so a crash
or ``kill -9`` during a save leaves the previous file intact. Loading never runs pickled code: our own
files are safetensors, and a ``.pth`` a user brings is read with ``torch.load(weights_only=True)``.
Every problem a user can cause (wrong file, wrong model, damaged file) raises ``CheckpointError`` with
one sentence that says what is wrong.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import math
import os
import pickle
import platform
import random
import re
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .geometry import MAX_INPUT_SIZE, check_fit
from .models import MODELS, build_model

FORMAT = "alexnet-studio/1"
METADATA_KEY = "alexnet_studio"  # the header key that holds our metadata as one JSON string
KIND_MODEL = "model"  # best.safetensors and other weights-for-prediction files
KIND_TRAIN_STATE = "train_state"  # last.safetensors
REQUIRED_KEYS = ("model", "batch_norm", "num_classes", "in_channels", "classes", "preprocess")
USER_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
FP16_MAX = torch.finfo(torch.float16).max
# A checkpoint may claim an input side up to geometry.MAX_INPUT_SIZE (as training's check_config allows).
MAX_STORE_SIZE = 2048  # the largest side a checkpoint may have photos decoded to
# What a checkpoint's header may claim before anything is built from it. ImageNet-21k has 21,841 classes;
# a header of a few hundred tensors and a long training history is well under 1 MiB; no metadata we write
# nests more than 5 levels (a training state's optimizer groups).
MAX_CLASSES = 100_000
MAX_HEADER_BYTES = 16 * 2**20
MAX_META_DEPTH = 32
# A normalised pixel is (x - mean) / std with x in [0, 1]: these bounds keep it, and every activation after it,
# far inside float32 (real means and stds lie between 0 and 1).
MIN_STD = 1e-3
MAX_MEAN_STD = 1e3
# Prefixes that wrappers add to state-dict keys: DataParallel/DDP ("module.") and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit; the message is one sentence for the user."""


# ---------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; once the caller has written it, it replaces ``path``.

    The temporary file lives in the same directory so that ``os.replace`` is an atomic rename. Its name
    starts with a dot and ends with ``.tmp``, so a file left behind by a killed process is never taken
    for a checkpoint.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o644)  # safetensors writes 0600; a checkpoint is meant to be shared and shipped
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)  # Windows flushes only files open for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Makes the rename itself durable. Windows cannot open a directory, and does not need this."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    with _replacing(Path(path)) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()


# ---------------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------------


def library_versions() -> dict[str, str | None]:
    """Versions that produced a checkpoint, for the record (torchvision is looked up, not imported)."""
    from . import __version__  # here, not at the top: the package imports its modules first

    def installed(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "alexnet_core": __version__,
        "torch": torch.__version__,
        "torchvision": installed("torchvision"),
        "safetensors": installed("safetensors"),
        "python": platform.python_version(),
    }


def model_meta(model_name: str, *, batch_norm: bool, num_classes: int, in_channels: int,
               classes: list[str], preprocess: dict, **extra: Any) -> dict:
    """Assembles and checks the metadata of a model checkpoint.

    ``preprocess`` holds at least ``input_size`` and one ``mean`` and ``std`` per input channel
    (``transforms.Preprocess.to_dict()``). Anything in ``extra`` is kept as given; these keys are read when
    present: ``data`` (the data set), ``epochs``, ``history`` (a list of per-epoch metric dicts),
    ``best_val_acc`` (a fraction, 0–1), ``wall_time_s``, ``device`` and ``config``. ``created`` (UTC,
    ISO 8601) and ``versions`` are filled in.
    """
    meta = {
        "model": model_name,
        "batch_norm": batch_norm,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "classes": list(classes),
        "preprocess": dict(preprocess),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
        **extra,
    }
    problem = _meta_problem(meta)
    if problem:
        raise CheckpointError(f"Invalid checkpoint metadata: {problem}.")
    return meta


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with a metadata dict (a phrase), or None when prediction can rely on it."""
    if not isinstance(meta, dict):
        return "it is not a JSON object"
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if not isinstance(meta["model"], str) or meta["model"] not in MODELS:
        return (f"the model {meta['model']!r} is not one this version of AlexNet Studio knows "
                f"({', '.join(MODELS)})")
    if not isinstance(meta["batch_norm"], bool):
        return f"batch_norm is {meta['batch_norm']!r}, not true or false"
    for key in ("num_classes", "in_channels"):
        if not _is_count(meta[key]):
            return f"{key} is {meta[key]!r}, not a positive whole number"
    # Bounds before anything is built: a model for 3,000,000 classes would take tens of gigabytes.
    if meta["num_classes"] > MAX_CLASSES:
        return f"num_classes is {meta['num_classes']:,}, more than the {MAX_CLASSES:,} AlexNet Studio takes"
    if meta["in_channels"] not in (1, 3):
        return f"in_channels is {meta['in_channels']:,}, not 1 or 3 (grey or colour images)"
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        return "classes is not a list of class names"
    if len(classes) != meta["num_classes"]:
        return f"it names {len(classes)} classes but num_classes is {meta['num_classes']}"
    preprocess = meta["preprocess"]
    if not isinstance(preprocess, dict) or not _is_count(preprocess.get("input_size")):
        return "preprocess has no input_size"
    for key in ("mean", "std"):
        values = preprocess.get(key)
        if (not isinstance(values, list) or len(values) != meta["in_channels"]
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            return f"preprocess.{key} is not a list of {meta['in_channels']} numbers (one per input channel)"
        # JSON readers accept NaN and Infinity, and numbers such as 1e308 that float32 cannot hold; any of
        # them would make every confidence NaN.
        if not all(math.isfinite(v) and abs(v) <= MAX_MEAN_STD for v in values):
            return (f"preprocess.{key} has a value that is not a finite number from -{MAX_MEAN_STD:g} "
                    f"to {MAX_MEAN_STD:g}")
    if not all(v > 0 for v in preprocess["std"]):
        return "preprocess.std has a value that is not positive"
    if not all(v >= MIN_STD for v in preprocess["std"]):
        # Dividing by a std of 1e-46 (zero in float32) or 1e-30 gives infinities, and then NaN.
        return f"preprocess.std has a value below {MIN_STD:g}"
    # A forged size must neither crash the first forward pass nor make every photo decode to a huge image.
    size, store = preprocess["input_size"], preprocess.get("store_size", preprocess["input_size"])
    if size > MAX_INPUT_SIZE:
        return f"preprocess.input_size is {size:,}, above the {MAX_INPUT_SIZE:,} pixels AlexNet Studio takes"
    if not _is_count(store) or store > MAX_STORE_SIZE:
        return f"preprocess.store_size is {store!r}, not a whole number from 1 to {MAX_STORE_SIZE:,}"
    if preprocess.get("in_channels", meta["in_channels"]) != meta["in_channels"]:
        return f"preprocess.in_channels is {preprocess['in_channels']!r} but in_channels is {meta['in_channels']}"
    try:
        check_fit(meta["model"], size)
    except ValueError as err:
        return f"its preprocess.input_size does not fit the model: {str(err).rstrip('.')}"
    return None


def _dump_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"The {what} cannot be stored as JSON ({err}).") from err


def _not_complete(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path.name} is not a complete safetensors file (it may be truncated or not a checkpoint at all).")


def _check_header_size(path: Path) -> None:
    """Refuses a header too big for any checkpoint before safetensors reads it: its first 8 bytes say how long
    it is (little-endian), and safetensors itself would read up to 100 MB of JSON."""
    with open(path, "rb") as f:
        prefix = f.read(8)
    length = int.from_bytes(prefix, "little")
    if len(prefix) < 8 or length > path.stat().st_size - 8:
        raise _not_complete(path)
    if length > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path.name} has a header of {length:,} bytes, more than the "
                              f"{MAX_HEADER_BYTES // 2**20} MiB any checkpoint needs.")


def _read_header(path: Path) -> dict[str, str]:
    """The safetensors header metadata of ``path`` (header only, fast), or a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"There is no checkpoint file at {path}.")
    try:
        _check_header_size(path)
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata()
    except (SafetensorError, OSError) as err:
        raise _not_complete(path) from err
    if not header or METADATA_KEY not in header:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not an AlexNet Studio checkpoint (it has no "
            f"'{METADATA_KEY}' metadata)."
        )
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path.name} is in format {header.get('format')!r}, which this version of AlexNet Studio "
            f"cannot read (it reads '{FORMAT}')."
        )
    return header


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels deep.

    Walked depth first without recursion, with one iterator per open level, so that it needs memory for the
    depth only, not for the millions of items a wide list may hold.
    """
    open_levels = [iter([value])]
    while open_levels:
        for item in open_levels[-1]:
            if isinstance(item, (dict, list)):
                if len(open_levels) > limit:     # item sits len(open_levels) levels deep
                    return True
                open_levels.append(iter(item.values() if isinstance(item, dict) else item))
                break
        else:
            open_levels.pop()
    return False


def _decode_meta(path: Path, header: dict[str, str]) -> Any:
    deep = CheckpointError(f"{path.name} has AlexNet Studio metadata nested more than {MAX_META_DEPTH} levels "
                           f"deep, which no checkpoint needs.")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path.name} has damaged AlexNet Studio metadata (not valid JSON).") from err
    except ValueError:   # Python refuses to read an integer of more than 4,300 digits (sys.int_info)
        raise CheckpointError(f"{path.name} has AlexNet Studio metadata with a number thousands of digits long, "
                              f"which no checkpoint needs.") from None
    except RecursionError:   # json's decoder recurses once per level: thousands of levels exhaust the stack
        raise deep from None
    if _too_deep(meta, MAX_META_DEPTH):   # a few hundred levels decode, but would break whatever walks them next
        raise deep
    return meta


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a model checkpoint, checked for everything prediction needs; reads the header only."""
    path = Path(path)
    header = _read_header(path)
    if header.get("kind") == KIND_TRAIN_STATE:
        raise CheckpointError(
            f"{path.name} is a resumable training state, not a model checkpoint: use the run's "
            f"best.safetensors for prediction, or resume training from it."
        )
    meta = _decode_meta(path, header)
    problem = _meta_problem(meta)
    if problem:
        raise CheckpointError(f"{path.name} has invalid AlexNet Studio metadata: {problem}.")
    return meta


def check_tensors(path: str | os.PathLike, meta: dict) -> None:
    """Raises CheckpointError unless the file holds exactly the tensors the model ``meta`` describes has.

    Checks the metadata's claims against the file before anything is built or loaded: the model is built on
    the meta device (shapes, no memory) and the file's shapes come from its header (no tensor data is read).
    """
    path = Path(path)
    with torch.device("meta"):
        model = build_model(meta["model"], meta["num_classes"], meta["in_channels"], meta["batch_norm"])
    problem = _fit_problem(_tensor_shapes(path), model.state_dict(), meta["model"])
    if problem:
        norm = "with BatchNorm" if meta["batch_norm"] else "without BatchNorm"
        raise CheckpointError(
            f"{path.name} does not fit {meta['model']} ({meta['num_classes']:,} classes, "
            f"{meta['in_channels']} input channels, {norm}): {problem}."
        )


def _tensor_shapes(path: Path) -> dict[str, torch.Size]:
    """Every tensor's shape in a safetensors file, read from its header (no tensor data is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: torch.Size(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise _not_complete(path) from err


def _read_train_state_meta(path: Path) -> dict:
    header = _read_header(path)
    if header.get("kind") != KIND_TRAIN_STATE:
        raise CheckpointError(f"{path.name} holds model weights only, not a training state to resume from.")
    state = _decode_meta(path, header)
    # Everything load_train_state relies on, checked up front so that a damaged header fails here.
    complete = (isinstance(state, dict) and isinstance(state.get("extra"), dict) and "scheduler" in state
                and isinstance(state.get("optimizer"), dict)
                and {"type", "param_groups", "state"} <= state["optimizer"].keys()
                and isinstance(state.get("rng"), dict) and "python" in state["rng"])
    if not complete:
        raise CheckpointError(f"{path.name} has incomplete training-state metadata.")
    return state


def read_train_extra(path: str | os.PathLike) -> dict:
    """The ``extra`` dict of a training state (config, epoch, history, …); reads the header only."""
    return _read_train_state_meta(Path(path))["extra"]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _train_state_problem(state: dict, tensors: dict[str, torch.Size]) -> str | None:
    """What in a training state's header and tensor names ``load_train_state`` could not use, or None."""
    optimizer, scheduler, rng = state["optimizer"], state["scheduler"], state["rng"]["python"]
    if not isinstance(state["extra"].get("config"), dict):
        return "it records no run settings (config)"
    if not isinstance(optimizer["type"], str) or not isinstance(optimizer["state"], dict) \
            or not all(isinstance(v, dict) and k.isdigit() for k, v in optimizer["state"].items()):
        return "its optimizer state is damaged"
    groups = optimizer["param_groups"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                               and all(map(_whole, g["params"])) for g in groups):
        return "its optimizer's parameter groups are damaged"
    if scheduler is not None and not (isinstance(scheduler, dict) and isinstance(scheduler.get("type"), str)
                                      and isinstance(scheduler.get("state"), dict)):
        return "its schedule's state is damaged"
    # random.setstate wants (version, 625 ints, a float or None)
    if not (isinstance(rng, list) and len(rng) == 3 and _whole(rng[0]) and isinstance(rng[1], list)
            and len(rng[1]) == 625 and all(map(_whole, rng[1])) and (rng[2] is None or is_finite_number(rng[2]))):
        return "its Python random state is damaged"
    if tensors.get("rng.torch") != torch.get_rng_state().shape:
        return "it lacks the random state of torch (rng.torch)"
    for key in tensors:
        parts = key.split(".")
        if parts[0] not in ("model", "averaged", "optim", "rng") or (
                parts[0] == "optim" and (len(parts) < 3 or not parts[1].isdigit())):
            return f"it holds a tensor {key[:60]!r} that no training state has"
    return None


def check_train_state(path: str | os.PathLike) -> dict:
    """Checks a training state before any work is done with it (header and tensor names; no tensor is read) and
    returns its ``extra`` dict; CheckpointError with one sentence for what is damaged."""
    path = Path(path)
    state = _read_train_state_meta(path)
    problem = _train_state_problem(state, _tensor_shapes(path))
    if problem:
        raise CheckpointError(f"{path.name} is damaged and cannot be resumed: {problem}.")
    return state["extra"]


# ---------------------------------------------------------------------------------------------------
# Model checkpoints
# ---------------------------------------------------------------------------------------------------


def _strip_wrapper_prefixes(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Removes "module." / "_orig_mod." from keys, so that wrapped and plain models share checkpoints."""
    stripped = {}
    for key, tensor in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        stripped[key] = tensor
    return stripped


def _for_storage(tensor: Tensor, half: bool) -> Tensor:
    """A CPU, contiguous copy fit for safetensors; in fp16 when asked and no value would overflow."""
    tensor = tensor.detach().to("cpu").contiguous()
    if half and tensor.dtype == torch.float32:
        finite = tensor[torch.isfinite(tensor)]
        # fp16 holds values up to 65504; anything larger stays fp32 rather than becoming inf.
        if finite.numel() == 0 or finite.abs().max() <= FP16_MAX:
            return tensor.half()
    return tensor


def _as_float32(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: t.float() if t.is_floating_point() else t for key, t in tensors.items()}


def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, Tensor], meta: dict, *,
                    half: bool = False) -> Path:
    """Writes weights and their metadata to ``path`` atomically; ``half`` stores floats as fp16.

    fp16 halves the file and costs AlexNet no accuracy; integer buffers (BatchNorm's
    num_batches_tracked) stay integers, and loading always gives float32 back.
    """
    path = Path(path)
    problem = _meta_problem(meta)
    if problem:
        raise CheckpointError(f"Invalid checkpoint metadata: {problem}.")
    header = {"format": FORMAT, "kind": KIND_MODEL, METADATA_KEY: _dump_json(meta, "checkpoint metadata")}
    tensors = {key: _for_storage(t, half) for key, t in _strip_wrapper_prefixes(state_dict).items()}
    with _replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def _load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise _not_complete(path) from err


def load_checkpoint(path: str | os.PathLike,
                    device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict]:
    """Weights (floats as float32) and metadata of a model checkpoint."""
    path = Path(path)
    meta = read_metadata(path)
    return _as_float32(_load_tensors(path, device)), meta


def _shape(shape: torch.Size) -> str:
    return "x".join(map(str, shape)) if len(shape) else "a single number"


def _fit_problem(found: dict[str, Tensor | torch.Size], expected: dict[str, Tensor], builds: str) -> str | None:
    """How ``found`` weights (tensors, or only their shapes) differ from what a model expects (a phrase), or
    None when they fit.

    ``builds`` names the model in the phrase, e.g. "its fc8.weight is 10x4096 but alexnet builds 1000x4096".
    """
    def shape(value: Tensor | torch.Size) -> torch.Size:
        return value.shape if isinstance(value, Tensor) else value

    for key, tensor in expected.items():
        if key in found and shape(found[key]) != tensor.shape:
            return f"its {key} is {_shape(shape(found[key]))} but {builds} builds {_shape(tensor.shape)}"
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"it lacks {missing[0]}{more}, which {builds} has"
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        return f"it has {unexpected[0]}{more}, which {builds} does not"
    return None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Builds the model a checkpoint describes, loads its weights (strictly) and puts it in eval mode."""
    path = Path(path)
    meta = read_metadata(path)
    check_tensors(path, meta)  # a file that lies about its model is refused before anything is loaded or built
    state_dict = _as_float32(_load_tensors(path, "cpu"))
    model = build_model(meta["model"], meta["num_classes"], meta["in_channels"], meta["batch_norm"])
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------------------------------
# Resumable training state
# ---------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def save_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                     scheduler: Any = None, averaged: nn.Module | None = None, extra: dict) -> Path:
    """Writes everything needed to resume training to ``path`` atomically, without pickle.

    Tensors: ``model.<key>``, ``averaged.<key>`` (the weight average, where the run keeps one),
    ``optim.<param index>.<name>`` and ``rng.torch`` / ``rng.cuda.<i>``.
    JSON: optimizer param groups and scalar state, the scheduler's JSON-serialisable entries, Python's
    ``random`` state and ``extra`` (epoch, history, best accuracy, config, …), which loading returns.
    """
    path = Path(path)
    tensors = {f"model.{key}": t for key, t in model.state_dict().items()}
    if averaged is not None:
        tensors.update({f"averaged.{key}": t for key, t in averaged.state_dict().items()})

    optim_state = optimizer.state_dict()
    scalar_state: dict[str, dict[str, Any]] = {}
    for index, entries in optim_state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalar_state.setdefault(str(index), {})[name] = value

    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state

    state = {
        "extra": extra,
        "optimizer": {
            "type": type(optimizer).__name__,
            "param_groups": optim_state["param_groups"],
            "state": scalar_state,
        },
        # A scheduler entry that JSON cannot hold (a user's lambda, say) is rebuilt by its constructor.
        "scheduler": None if scheduler is None else {
            "type": type(scheduler).__name__,
            "state": {k: v for k, v in scheduler.state_dict().items() if _jsonable(v)},
        },
        "rng": {"python": random.getstate()},
    }
    header = {"format": FORMAT, "kind": KIND_TRAIN_STATE, METADATA_KEY: _dump_json(state, "training state")}
    tensors = {key: _for_storage(t, half=False) for key, t in tensors.items()}
    with _replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def _restore_tuples(saved_groups: list[dict], current_groups: list[dict]) -> list[dict]:
    """JSON turns tuples (Adam's betas) into lists; give them back the type the optimizer uses."""
    restored = []
    for saved, current in zip(saved_groups, current_groups):
        group = dict(saved)
        for key, value in group.items():
            if isinstance(current.get(key), tuple) and isinstance(value, list):
                group[key] = tuple(value)
        restored.append(group)
    return restored


def load_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                     scheduler: Any = None, averaged: nn.Module | None = None,
                     device: str | torch.device = "cpu") -> dict:
    """Restores model, optimizer, scheduler and RNG state in place from ``save_train_state``'s file.

    Model weights are read onto ``device``; the optimizer moves its state next to its parameters itself.
    Returns the ``extra`` dict that was saved. Nothing is changed when the file does not fit.
    """
    path = Path(path)
    state = _read_train_state_meta(path)
    extra, optim_meta, sched_meta = state["extra"], state["optimizer"], state["scheduler"]

    if optim_meta["type"] != type(optimizer).__name__:
        raise CheckpointError(
            f"{path.name} holds {optim_meta['type']} state but this run uses {type(optimizer).__name__}."
        )
    if scheduler is not None and sched_meta is not None and sched_meta["type"] != type(scheduler).__name__:
        raise CheckpointError(
            f"{path.name} holds a {sched_meta['type']} schedule but this run uses {type(scheduler).__name__}."
        )

    tensors = _load_tensors(path, "cpu")
    model_state = {key[len("model."):]: t.to(device) for key, t in tensors.items() if key.startswith("model.")}
    problem = _fit_problem(model_state, model.state_dict(), "this run's model")
    if problem:
        raise CheckpointError(f"{path.name} does not fit this run's model: {problem}.")

    optim_state: dict[int, dict[str, Any]] = {}
    for index, entries in optim_meta["state"].items():
        optim_state.setdefault(int(index), {}).update(entries)
    for key, tensor in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = tensor
    param_groups = _restore_tuples(optim_meta["param_groups"], optimizer.param_groups)
    try:
        optimizer.load_state_dict({"state": dict(sorted(optim_state.items())), "param_groups": param_groups})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{path.name}'s optimizer state does not fit this run's optimizer ({err}).") from err

    model.load_state_dict(model_state, strict=True)
    averaged_state = {key[len("averaged."):]: t.to(device) for key, t in tensors.items()
                      if key.startswith("averaged.")}
    if averaged is not None and averaged_state:
        averaged.load_state_dict(averaged_state, strict=True)
    if scheduler is not None and sched_meta is not None:
        scheduler.load_state_dict(sched_meta["state"])

    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        for key, tensor in tensors.items():
            if key.startswith("rng.cuda.") and int(key.rsplit(".", 1)[1]) < torch.cuda.device_count():
                torch.cuda.set_rng_state(tensor, int(key.rsplit(".", 1)[1]))
    # JSON made the state's tuples into lists; random.setstate wants (version, tuple of ints, gauss).
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    return extra


# ---------------------------------------------------------------------------------------------------
# Weights a user brings
# ---------------------------------------------------------------------------------------------------


def load_user_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Reads a state dict from a user's file without running any code it may carry.

    ``.safetensors`` is read directly; ``.pth``, ``.pt`` and ``.bin`` go through
    ``torch.load(weights_only=True)``, which refuses pickled objects. A training checkpoint's
    ``state_dict``/``model`` entry is unwrapped and ``module.`` prefixes are stripped. Floats come back
    as float32.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in USER_WEIGHT_SUFFIXES:
        raise CheckpointError(
            f"{path.name} is not a weights file AlexNet Studio reads (use {', '.join(USER_WEIGHT_SUFFIXES)})."
        )
    if not path.is_file():
        raise CheckpointError(f"There is no weights file at {path}.")
    if suffix == ".safetensors":
        return _as_float32(_strip_wrapper_prefixes(_load_tensors(path)))

    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it may not support; a failure is reported below anyway.
            warnings.simplefilter("ignore", UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path.name} holds more than plain tensors (pickled objects or code), which AlexNet Studio "
            f"refuses to load: save it with torch.save(model.state_dict(), ...) or as .safetensors."
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path.name} is not a readable PyTorch weights file ({err}).") from err

    for wrapper_key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper_key), dict):
            loaded = loaded[wrapper_key]
            break
    if not isinstance(loaded, dict) or not loaded or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()):
        raise CheckpointError(f"{path.name} does not hold a state dict (a mapping of names to tensors).")
    return _as_float32(_strip_wrapper_prefixes(loaded))


# ---------------------------------------------------------------------------------------------------
# Finding checkpoints
# ---------------------------------------------------------------------------------------------------


@dataclass
class CheckpointInfo:
    """One usable checkpoint, as the app lists it."""

    path: Path
    name: str  # a label for dropdowns, e.g. "CIFAR-10 · 10 classes · 91.2% val · alexnet_cifar_small-cifar10-20250101"
    model: str
    classes: list[str]
    best_val_acc: float | None  # a fraction, 0–1
    created: str | None


def is_finite_number(value: Any) -> bool:
    """A recorded value that is a real, finite number (not a bool, NaN, infinity or text)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Data sets as a person names them; a folder is known by its last part ("../shared/data/cifar10" → CIFAR-10).
DATA_TITLES = {"cifar10": "CIFAR-10", "flowers": "Flowers", "flowers5": "Flowers", "fashion-mnist": "Fashion-MNIST"}
# The line of a model card (cards.py) that holds the plain top-1 on the test split.
_CARD_TEST = re.compile(r"\*\*Top-1 on the test split \([\d,]+ images\): ([\d.]+)%\*\*")


def _card_test_accuracy(path: Path) -> float | None:
    """The plain test top-1 (a percentage) from the checkpoint's model card, cards/<name>.md beside it."""
    card = path.parent / "cards" / f"{path.stem}.md"
    try:
        stat = card.stat()
    except OSError:
        return None
    # The app lists checkpoints often: a card is read again only when its size or modification time changes.
    return _read_card_test_accuracy(str(card), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _read_card_test_accuracy(card: str, mtime_ns: int, size: int) -> float | None:
    """The card's test top-1; ``mtime_ns`` and ``size`` are there only to key the cache."""
    try:
        match = _CARD_TEST.search(Path(card).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    return float(match.group(1)) if match else None


def _label(path: Path, meta: dict) -> str:
    """What a checkpoint is, for a person: "CIFAR-10 · 10 classes · 89.45% test" (test top-1 from its model
    card), or "… · 70.5% val · run-name" for a run without a card (best validation accuracy)."""
    # A run directory's name says more than "best"; any other file is known by its own name.
    run = path.parent.name if path.stem == "best" and path.parent.name else path.stem
    data = Path(str(meta.get("data") or "")).name  # a built-in name ("cifar10") or a folder's last part
    title = DATA_TITLES.get(data, data)
    n = meta["num_classes"]
    parts = [title, f"{n:,} class{'es' if n != 1 else ''}"]
    test, acc = _card_test_accuracy(path), meta.get("best_val_acc")
    if test is not None:
        parts.append(f"{test:g}% test")
    elif is_finite_number(acc):
        parts.append(f"{100 * acc:.1f}% val")
    if re.sub(r"\W|_", "", run).lower() not in (re.sub(r"\W|_", "", title).lower(), data.lower()):
        parts.append(run)  # the file or run, unless it only repeats the data's name
    return " · ".join(str(p) for p in parts if p)


_log = logging.getLogger(__name__)

SNAPSHOTS_FOLDER = "snapshots"  # a run's live-view snapshots (alexnet_core.snapshots): no model checkpoints
_left_out: set[tuple[str, str]] = set()   # (file, reason) already logged: the app lists checkpoints often


def _log_left_out(path: Path, error: Exception) -> None:
    key = (str(path), str(error))
    if key not in _left_out and len(_left_out) < 10_000:
        _left_out.add(key)
        _log.warning("Left out of the checkpoint lists: %s (%s)", path, error)


def list_checkpoints(*dirs: str | os.PathLike, recursive: bool = True) -> list[CheckpointInfo]:
    """Every model checkpoint under ``dirs`` (files may be named directly), newest first.

    Training states (last.safetensors) and files whose header cannot be read or whose metadata is invalid
    (absurd counts or sizes, NaN mean/std, nesting thousands deep, a number thousands of digits long) are left
    out, with one line in the log the first time each is seen: a listing must not fail because of one broken
    file, and a file that can never be loaded is no choice to offer. Only
    headers are read, so tensors that do not fit the metadata are found when the file is loaded, with a
    sentence that names the first one (``check_tensors``).
    """
    found: dict[Path, tuple[float, CheckpointInfo]] = {}
    for root in map(Path, dirs):
        if root.is_file():
            candidates = [root]
        elif root.is_dir():
            candidates = root.rglob("*.safetensors") if recursive else root.glob("*.safetensors")
        else:
            continue
        for path in candidates:
            # A run's training state and its live-view snapshots (written several times an epoch) are no model
            # checkpoints: skipped, not logged one line per file.
            if path.name == "last.safetensors" or path.parent.name == SNAPSHOTS_FOLDER or path.resolve() in found:
                continue
            try:
                meta = read_metadata(path)
                modified = path.stat().st_mtime
            except (CheckpointError, OSError) as error:
                _log_left_out(path, error)
                continue
            acc = meta.get("best_val_acc")
            found[path.resolve()] = modified, CheckpointInfo(
                path=path,
                name=_label(path, meta),
                model=meta["model"],
                classes=meta["classes"],
                best_val_acc=float(acc) if is_finite_number(acc) else None,
                created=meta.get("created"),
            )
    return [info for _, info in sorted(found.values(), key=lambda item: item[0], reverse=True)]
