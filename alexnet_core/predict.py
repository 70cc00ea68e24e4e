"""Prediction: one image in, the most likely classes out, prepared exactly as training and evaluation prepare it.

Every image goes through ``images.decode_image`` (any mode, EXIF rotation, first frame, resize to the store
size) and then ``transforms.eval_transform`` (crop or resize to the input, normalise): the very functions that
evaluation uses, so one image gives one tensor wherever it is fed. Test-time augmentation (TTA) averages
the softmax over several views of that image:

- ``none``: the plain view;
- ``flip``: the plain view and its mirror image;
- ``ten-crop``: the paper's (Krizhevsky et al. 2012, section 4.1): four corner crops and the centre crop,
  each also mirrored. Photos kept at 256 are cropped to 224 from the stored image; small images (CIFAR's 32,
  stored at their input size) are first reflect-padded by input/16, so the corner crops shift by 2 pixels.
  Training's random crops shift by up to input/8 (4 pixels), but shifting the test views that far lowered
  validation accuracy below flip's; 2 pixels raised it above (``bench/tta_shift.py``).

``get_predictor`` keeps each loaded model (keyed by file and modification time), so an app loads and warms
a checkpoint once, not on every request.
"""

from __future__ import annotations

import numbers
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from . import checkpoints, data, memory
from .images import decode_image, enlarge
from .models import default_class_names, get_spec
from .transforms import TTA_VIEWS, Preprocess, average_views, check_tta, eval_transform, tta_views

MAX_TOP_K = 1000  # ImageNet's class count: asking for more top classes than that is a mistake
VIEW_MIN_SIDE = 224  # network_view upscales small inputs (CIFAR's 32) to at least this side
CACHE_SIZE = 8  # loaded models kept by get_predictor; a flowers net is about 60 MB in float32


@dataclass
class Prediction:
    """What a model thinks of one image."""

    top_k: list[tuple[str, float]]    # the top_k most likely (class, probability), most likely first
    probabilities: dict[str, float]   # every class, in the model's class order; sums to 1
    network_input: torch.Tensor       # the normalised [C, input, input] tensor of the plain view
    seconds: float                    # from image to probabilities: decode, preprocess, forward, softmax
    tta: str                          # the test-time augmentation used


def check_top_k(top_k: int | float) -> int:
    """``top_k`` as an int, or a ValueError sentence when it is not a whole number from 1 to MAX_TOP_K.

    The sentence says "(k)": that is the name people see, the app's "Top classes (k)" and its API parameter."""
    whole = isinstance(top_k, numbers.Real) and not isinstance(top_k, bool) and float(top_k).is_integer()
    if not whole or not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(
            f"The number of top classes (k) must be a whole number from 1 to {MAX_TOP_K}, not {top_k!r}.")
    return int(top_k)








def network_view(prediction: Prediction | torch.Tensor, pre: Preprocess) -> Image.Image:
    """The input as the network sees it: denormalised, and upscaled (nearest) to at least 224 pixels."""
    x = prediction.network_input if isinstance(prediction, Prediction) else prediction
    mean = torch.tensor(pre.mean, dtype=x.dtype)[:, None, None]
    std = torch.tensor(pre.std, dtype=x.dtype)[:, None, None]
    pixels = ((x.detach().cpu() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()
    return enlarge(Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array), VIEW_MIN_SIDE)


class Predictor:
    """A model in eval mode with its class names and preprocessing, ready to classify images."""

    def __init__(self, model: nn.Module, classes: list[str], pre: Preprocess, meta: dict,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.classes = list(classes)
        self.pre = pre
        self.meta = meta

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Predictor:
        """A Predictor for one of AlexNet Studio's checkpoints (CheckpointError when it cannot be used)."""
        model, meta = checkpoints.load_model(path, device="cpu")
        return cls(model, meta["classes"], Preprocess.from_dict(meta["preprocess"]), meta, device)

    @classmethod
    def from_user_weights(cls, path: str | os.PathLike, model_name: str, classes: list[str] | None = None,
                          device: str | torch.device = "cpu") -> Predictor:
        """A Predictor for a state dict a user brings (.pth, .pt, .bin, .safetensors) for a registry variant.

        Read without running pickled code. The class count comes from the last Linear layer, the input
        channels from conv1 and BatchNorm from the presence of bn weights; preprocessing is the variant's.
        """
        path = Path(path)
        spec = get_spec(model_name)
        state_dict = checkpoints.load_user_weights(path)
        with torch.device("meta"):  # only the layer names are needed here
            last_linear = [name for name, m in spec.build().named_modules() if isinstance(m, nn.Linear)][-1]
        conv1 = state_dict.get("features.conv1.weight")
        last = state_dict.get(f"{last_linear}.weight")
        if conv1 is None or last is None or conv1.dim() != 4 or last.dim() != 2:
            raise checkpoints.CheckpointError(
                f"{path.name} does not hold {model_name} weights (it lacks features.conv1.weight or "
                f"{last_linear}.weight).")
        num_classes, in_channels = last.shape[0], conv1.shape[1]
        batch_norm = any(key.startswith("features.bn") for key in state_dict)
        if classes is None:
            classes = default_class_names(num_classes)
        if len(classes) != num_classes:
            raise ValueError(f"{path.name} has {num_classes} classes but {len(classes)} class names were given.")
        model = spec.build(num_classes, in_channels, batch_norm)
        problem = checkpoints._fit_problem(state_dict, model.state_dict(), model_name)
        if problem:
            raise checkpoints.CheckpointError(f"{path.name} does not fit {model_name}: {problem}.")
        model.load_state_dict(state_dict, strict=True)
        pre = data.preprocess_for(spec, in_channels=in_channels)
        meta = checkpoints.model_meta(model_name, batch_norm=batch_norm, num_classes=num_classes,
                                      in_channels=in_channels, classes=classes, preprocess=pre.to_dict(),
                                      source=f"user weights {path.name}")
        return cls(model, classes, pre, meta, device)

    def prepare(self, image: Image.Image | str | os.PathLike | bytes) -> torch.Tensor:
        """The plain view's network input, normalised [C, input, input]: decode_image then eval_transform."""
        return eval_transform(decode_image(image, self.pre), self.pre)

    @torch.inference_mode()
    def predict(self, image: Image.Image | str | os.PathLike | bytes, *, top_k: int = 5,
                tta: str = "none") -> Prediction:
        """The ``top_k`` most likely classes of ``image`` (a PIL image, a file path or the file's bytes).

        ValueError for a bad ``top_k`` or ``tta``; images.ImageError for anything that is not an image.
        """
        top_k, tta = check_top_k(top_k), check_tta(tta)
        self.check_memory(tta)
        start = time.perf_counter()
        stored = decode_image(image, self.pre)
        views = tta_views(stored.to(self.device), self.pre, tta)
        logits = self.model(views.contiguous(memory_format=torch.channels_last))
        probabilities = average_views(logits, tta)[0].cpu()
        seconds = time.perf_counter() - start
        order = probabilities.argsort(descending=True)[:top_k].tolist()
        values = probabilities.tolist()
        return Prediction(
            top_k=[(self.classes[i], values[i]) for i in order],
            probabilities=dict(zip(self.classes, values)),
            network_input=views[0].cpu(),
            seconds=seconds,
            tta=tta,
        )

    def check_memory(self, tta: str = "none") -> None:
        """memory.MemoryRefusal (one sentence) when one image with ``tta`` would need more memory than this
        process may use: a checkpoint's input and store sizes decide what a prediction costs."""
        memory.check_inference("Predicting" + ("" if tta == "none" else f" with {tta}"), self.meta["model"],
                               self.pre, batch_norm=self.meta["batch_norm"], num_classes=len(self.classes),
                               views=TTA_VIEWS[check_tta(tta)], device=self.device)

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Runs each TTA's batch size once (those that fit in memory), so that the first real request does not pay
        for kernel set-up."""
        side, channels = self.pre.input_size, self.pre.in_channels
        for tta, views in TTA_VIEWS.items():
            try:
                self.check_memory(tta)
            except memory.MemoryRefusal:
                break
            x = torch.zeros((views, channels, side, side), device=self.device)
            self.model(x.contiguous(memory_format=torch.channels_last))


_cache: OrderedDict[tuple[str, str], tuple[int, Predictor]] = OrderedDict()
_cache_lock = threading.Lock()


def get_predictor(path: str | os.PathLike, device: str | torch.device = "cpu") -> Predictor:
    """The Predictor for a checkpoint, loaded and warmed up once and then kept (reloaded when the file changes).

    Thread-safe; keeps the CACHE_SIZE most recently used models.
    """
    path = Path(path)
    try:
        resolved, modified = path.resolve(), path.stat().st_mtime_ns
    except OSError:
        raise checkpoints.CheckpointError(f"There is no checkpoint file at {path}.") from None
    key = (str(resolved), str(torch.device(device)))
    with _cache_lock:  # one lock: two requests for a new model load it once
        cached = _cache.get(key)
        if cached is not None and cached[0] == modified:
            _cache.move_to_end(key)
            return cached[1]
        predictor = Predictor.from_checkpoint(resolved, device)
        predictor.warm_up()
        _cache[key] = (modified, predictor)
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return predictor
