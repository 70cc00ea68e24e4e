"""Looking inside a network: what each conv layer sees, the first layer's filters, and Grad-CAM.

For a model (a checkpoint or an untrained registry variant) and one photo, ``explain`` gathers what the
app's Inside tab and ``python -m alexnet_core explain`` show:

- a grid of the most active channels of every conv layer ("conv3 · 384×13×13"), one tile per channel,
  each tile normalised on its own and coloured with magma (dark: quiet, bright: active);
- conv1's filters as an RGB grid (grey for one-channel nets): AlexNet's famous edges and colour blobs;
- a Grad-CAM heat map (pytorch-grad-cam) over the photo as the network sees it, for the predicted class
  or one the user picks;
- the top-k prediction.

The photo goes through ``images.decode_image`` and ``transforms.eval_transform``, the path prediction takes, so
what is explained is exactly what the network classifies. Feature maps are the ReLU outputs of each conv
layer (conv, then BatchNorm where there is one, then ReLU), i.e. what the next layer reads.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from . import checkpoints, data, memory
from .images import decode_image, enlarge
from .models import build_model, default_class_names, get_spec
from .predict import check_top_k, network_view
from .transforms import Preprocess, eval_transform

__all__ = [
    "ExplainError", "ActivationGrid", "Explanation", "conv_layers", "feature_maps", "activation_grid",
    "first_layer_filters", "grad_cam", "gradcam_overlay", "resolve_class", "untrained_variant", "explain",
    "write_explanation",
]

MIN_TILE = 64     # px: a feature-map tile's side after upscaling (so every written file is ≥ 64 px too)
MIN_FILTER = 44   # px: a conv1 filter's side after upscaling (AlexNet's 11x11 filters × 4)
GAP = 2           # px between tiles
GAP_COLOUR = 255  # white
# magma for feature maps and Grad-CAM alike: perceptually uniform, and readable in grey.
_MAGMA = (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


class ExplainError(ValueError):
    """A layer or class that the model does not have; the message is one sentence for the user."""


@dataclass
class ActivationGrid:
    """The most active channels of one conv layer, as one image."""

    layer: str                    # conv1 … conv5
    shape: tuple[int, int, int]   # the whole layer's output: channels, height, width
    channels: list[int]           # the channels shown, most active first
    image: Image.Image

    @property
    def label(self) -> str:
        channels, height, width = self.shape
        return f"{self.layer} · {channels}×{height}×{width}"


@dataclass
class Explanation:
    """Everything ``explain`` found for one photo."""

    activations: list[ActivationGrid]   # one per conv layer, in order
    filters: Image.Image                # conv1's weights
    gradcam: Image.Image                # Grad-CAM heat map over the photo as the network sees it
    heatmap: np.ndarray                 # the raw Grad-CAM map: input size, values in [0, 1]
    target_class: int                   # the class Grad-CAM explains
    target_name: str
    top_k: list[tuple[str, float]]      # (class name, probability), most probable first


# --- Layers ----------------------------------------------------------------------------------------------


def conv_layers(model: nn.Module) -> list[str]:
    """The names of the conv layers in ``model.features``, in order (conv1 … conv5 in the registry)."""
    return [name for name, module in model.features.named_children() if isinstance(module, nn.Conv2d)]


def _activation_name(model: nn.Module, layer: str) -> str:
    """The ReLU that follows conv layer ``layer`` (relu3 for conv3), or ``layer`` itself if it has none.

    Any other name in ``model.features`` (bn5, pool5, …) stands for itself.
    """
    children = dict(model.features.named_children())
    if layer not in children:
        raise ExplainError(f"{type(model).__name__} has no layer '{layer}' in its features "
                           f"(its conv layers are {', '.join(conv_layers(model))}).")
    relu = "relu" + layer[len("conv"):]
    return relu if layer.startswith("conv") and isinstance(children.get(relu), nn.ReLU) else layer


def _batch(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """One image [C,H,W] or a batch of one [1,C,H,W] → [1,C,H,W] on the model's device."""
    batch = x[None] if x.ndim == 3 else x
    if batch.ndim != 4 or batch.shape[0] != 1:
        raise ExplainError(f"Explaining takes one image, not a tensor of shape {tuple(x.shape)}.")
    return batch.to(next(model.parameters()).device)


# --- Feature maps ----------------------------------------------------------------------------------------


@torch.no_grad()
def _forward(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Feature maps of every conv layer ([C,H,W] each, on the CPU) and the logits [num_classes]."""
    # Hooks sit on the ReLUs, not on the convs: an in-place ReLU would overwrite a conv's output after
    # its hook had run, and the ReLU output is what the next layer actually reads.
    children = dict(model.features.named_children())
    maps: dict[str, torch.Tensor] = {}
    handles = []
    for conv in conv_layers(model):
        def keep(module, inputs, output, conv=conv):
            maps[conv] = output[0].detach().float().cpu()
        handles.append(children[_activation_name(model, conv)].register_forward_hook(keep))
    was_training = model.training
    model.eval()
    try:
        logits = model(_batch(x, model))[0].float().cpu()
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return maps, logits


def feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ReLU output of every conv layer for one normalised image ``x``: {"conv1": [C,H,W], …}.

    Hooks ``model`` and puts it in eval mode for one forward pass (``explain`` works on a copy instead).
    """
    return _forward(model, x)[0]


# --- Grids of tiles --------------------------------------------------------------------------------------


def _grid(tiles: np.ndarray, min_side: int) -> Image.Image:
    """[N,h,w,3] uint8 tiles, each enlarged (nearest) to at least ``min_side`` → one RGB image in a square-ish
    grid, row by row, with GAP pixels between and around them (torchvision's make_grid)."""
    enlarged = np.stack([np.asarray(enlarge(Image.fromarray(tile), min_side)) for tile in tiles])
    grid = make_grid(torch.from_numpy(enlarged).permute(0, 3, 1, 2), nrow=math.ceil(math.sqrt(len(tiles))),
                     padding=GAP, pad_value=GAP_COLOUR)
    return Image.fromarray(grid.permute(1, 2, 0).numpy())


def _unit_range(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Min-max normalisation to [0, 1] over ``dims``; a constant slice becomes 0."""
    low, high = values.amin(dims, keepdim=True), values.amax(dims, keepdim=True)
    return (values - low) / (high - low).clamp_min(1e-12)


def activation_grid(maps: dict[str, torch.Tensor], layer: str, top: int = 16) -> ActivationGrid:
    """The ``top`` channels of ``layer`` with the highest mean activation, each normalised on its own and
    coloured with magma, in a square-ish grid."""
    if layer not in maps:
        raise ExplainError(f"There are no feature maps for '{layer}' (there are {', '.join(maps)}).")
    fmap = maps[layer]
    channels = fmap.mean((1, 2)).argsort(descending=True)[:max(1, top)]
    shown = _unit_range(fmap[channels], (1, 2))
    tiles = _MAGMA[(shown * 255).round().to(torch.uint8).numpy()]  # [N,h,w] → [N,h,w,3]
    image = _grid(tiles, MIN_TILE)
    return ActivationGrid(layer, tuple(fmap.shape), channels.tolist(), image)


def first_layer_filters(model: nn.Module) -> Image.Image:
    """conv1's filters as a grid: RGB for three input channels, grey otherwise; each filter min-max
    normalised on its own, so that its pattern shows whatever its scale."""
    conv1 = next(m for m in model.features if isinstance(m, nn.Conv2d))
    weights = _unit_range(conv1.weight.detach().float().cpu(), (1, 2, 3))  # [out, in, k, k]
    if weights.shape[1] != 3:
        weights = weights.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    tiles = (weights.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    return _grid(tiles, MIN_FILTER)


# --- Grad-CAM --------------------------------------------------------------------------------------------


def _for_gradients(model: nn.Module) -> nn.Module:
    """A copy of ``model`` to hook and take gradients through, so that the caller's model (which the app
    shares with its Predict tab) is never hooked, switched to eval or changed.

    In-place ReLUs are made out-of-place: in place, a ReLU overwrites the tensor that the layer before
    it returned, so hooks on that layer would see (and differentiate) the wrong values. The weights are
    frozen (the input asks for gradients instead), so the backward pass computes the activations'
    gradients that Grad-CAM needs and skips the weights' (fc6's alone would be 38 M numbers).
    """
    network = copy.deepcopy(model).eval()  # eval: BatchNorm uses its running statistics, dropout is off
    for module in network.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return network.requires_grad_(False)


def grad_cam(model: nn.Module, x: torch.Tensor, target_class: int | None = None,
             layer: str | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM of one normalised image for ``target_class`` (None: the predicted class).

    ``layer`` is a conv layer's name (its ReLU output is used) or any name in ``model.features``; by
    default the last conv layer. Returns the heat map (input height × width, values in [0, 1]) and the
    class it explains.
    """
    return _grad_cam(_for_gradients(model), x, target_class, layer)


def _grad_cam(network: nn.Module, x: torch.Tensor, target_class: int | None,
              layer: str | None) -> tuple[np.ndarray, int]:
    """``grad_cam`` on a model that ``_for_gradients`` prepared."""
    target = dict(network.features.named_children())[_activation_name(network, layer or conv_layers(network)[-1])]
    batch = _batch(x, network).detach().requires_grad_(True)
    num_classes = network.classifier[-1].out_features
    if target_class is not None and not 0 <= target_class < num_classes:
        raise ExplainError(f"Class {target_class} does not exist: the model has classes 0 to {num_classes - 1}.")
    # Imported here: pytorch_grad_cam takes seconds to import, and training (snapshots.py) uses this module too.
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = None if target_class is None else [ClassifierOutputTarget(target_class)]
    cam = GradCAM(network, [target])
    try:  # not `with cam:`: its __exit__ prints and swallows IndexErrors
        with torch.enable_grad():
            heatmap = cam(input_tensor=batch, targets=targets)[0]
        chosen = int(cam.outputs[0].argmax()) if target_class is None else target_class
    finally:
        cam.activations_and_grads.release()
    return heatmap.astype(np.float32), chosen


def gradcam_overlay(photo: Image.Image | np.ndarray, heatmap: np.ndarray) -> Image.Image:
    """The heat map (resized to the photo, bilinear) over an RGB or grey uint8 photo, in magma."""
    rgb = np.asarray(photo.convert("RGB") if isinstance(photo, Image.Image) else photo)
    if rgb.ndim == 2 or rgb.shape[2] == 1:
        rgb = np.repeat(rgb.reshape(rgb.shape[0], rgb.shape[1], 1), 3, axis=2)
    height, width = rgb.shape[:2]
    if heatmap.shape != (height, width):
        heatmap = np.asarray(Image.fromarray(heatmap.astype(np.float32))
                             .resize((width, height), Image.Resampling.BILINEAR))
    # pytorch-grad-cam's show_cam_on_image takes only OpenCV colour maps; this is its blend (half photo,
    # half heat map, scaled to the brightest pixel) with matplotlib's magma, which the feature maps use too.
    heat = _MAGMA[np.uint8(255 * np.clip(heatmap, 0, 1))].astype(np.float32) / 255
    cam = 0.5 * heat + 0.5 * rgb.astype(np.float32) / 255
    return Image.fromarray(np.uint8(255 * cam / np.max(cam)))


# --- Putting it together ---------------------------------------------------------------------------------


def resolve_class(target: int | str, classes: list[str]) -> int:
    """A class index from a class name or an index (an int or a string of digits); names win."""
    text = str(target).strip()
    if not isinstance(target, int) and text in classes:
        return classes.index(text)
    if isinstance(target, int) or text.isdigit():
        index = int(text)
        if 0 <= index < len(classes):
            return index
    shown = ", ".join(classes[:10]) + ("…" if len(classes) > 10 else "")
    raise ExplainError(f"'{target}' is neither one of the model's classes ({shown}) "
                       f"nor a class index from 0 to {len(classes) - 1}.")


def untrained_variant(name: str) -> tuple[nn.Module, dict]:
    """A registry variant with fresh random weights, in eval mode, and metadata shaped like a checkpoint's
    (model, classes, preprocess, …), so that ``explain`` takes either alike."""
    spec = get_spec(name)
    model = build_model(name).eval()
    meta = checkpoints.model_meta(name, batch_norm=spec.batch_norm, num_classes=spec.num_classes,
                                  in_channels=spec.in_channels, classes=default_class_names(spec.num_classes),
                                  preprocess=data.preprocess_for(spec).to_dict())
    return model, meta


def explain(model: nn.Module, meta_or_pre: dict | Preprocess,
            image: Image.Image | str | Path | bytes, *, target_class: int | str | None = None, top_k: int = 5,
            top_channels: int = 16, classes: list[str] | None = None) -> Explanation:
    """Activations of every conv layer, conv1's filters, Grad-CAM and the top-k prediction for one image.

    ``meta_or_pre`` is a checkpoint's metadata (its preprocess and classes are used) or a Preprocess;
    ``classes`` overrides the class names (default: the checkpoint's, or "class 0", "class 1", …).
    ``target_class`` (a name or an index) is the class Grad-CAM explains; None explains the prediction.
    """
    top_k = check_top_k(top_k)  # a ValueError sentence, as predict's
    if isinstance(meta_or_pre, Preprocess):
        pre, known = meta_or_pre, None
    else:
        pre, known = Preprocess.from_dict(meta_or_pre["preprocess"]), meta_or_pre.get("classes")
    num_classes = model.classifier[-1].out_features
    classes = list(classes or known or default_class_names(num_classes))
    if len(classes) != num_classes:
        raise ExplainError(f"The model has {num_classes} classes but {len(classes)} class names were given.")

    if not isinstance(meta_or_pre, Preprocess):   # Grad-CAM's backward pass, paid for before the photo is decoded
        memory.check_inference("Grad-CAM", meta_or_pre["model"], pre, batch_norm=meta_or_pre["batch_norm"],
                               num_classes=num_classes, grad=True)
    x = eval_transform(decode_image(image, pre), pre)
    network = _for_gradients(model)
    maps, logits = _forward(network, x)
    wanted = None if target_class is None else resolve_class(target_class, classes)
    heatmap, chosen = _grad_cam(network, x, wanted, None)

    overlay = gradcam_overlay(network_view(x, pre), heatmap)  # the photo as the network sees it, ≥ 224 px
    probabilities = torch.softmax(logits, 0)
    best = probabilities.topk(min(top_k, num_classes))
    return Explanation(
        activations=[activation_grid(maps, layer, top_channels) for layer in maps],
        filters=first_layer_filters(model),
        gradcam=overlay,
        heatmap=heatmap,
        target_class=chosen,
        target_name=classes[chosen],
        top_k=[(classes[i], float(p)) for p, i in zip(best.values.tolist(), best.indices.tolist())],
    )


def write_explanation(explanation: Explanation, out_dir: str | Path) -> list[Path]:
    """Writes activations_<layer>.png for each conv layer, filters_conv1.png and gradcam.png; returns them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = [(f"activations_{grid.layer}.png", grid.image) for grid in explanation.activations]
    images += [("filters_conv1.png", explanation.filters), ("gradcam.png", explanation.gradcam)]
    paths = []
    for name, image in images:
        image.save(out / name)
        paths.append(out / name)
    return paths
