"""From stored uint8 images to the network's input, a whole batch at a time on the batch's own device.

``eval_transform`` is the one deterministic path that evaluation and prediction share: centre crop (or
resize up) to the input size, then normalise. ``train_transform`` adds the augmentation:

- small inputs (32x32 CIFAR style): random crop from a reflect-padded image and a horizontal flip;
- big inputs (224/227 ImageNet style): RandomResizedCrop (scale 0.08–1, aspect 3/4–4/3) and a flip;
- optionally the paper's PCA colour lighting (Krizhevsky et al. 2012, section 4.1);
- optionally Cutout (DeVries & Taylor 2017): a square of each image set to the mean, which keeps a small
  net from memorising CIFAR-10's 50,000 images.

torchvision.transforms.v2 draws one set of random parameters per call, so a batch would share a single
crop; here every sample gets its own crop and flip, drawn from ``generator`` (on its own device, so the
result does not depend on where the images live) and applied in a few batched tensor operations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as nnf
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as F

# At or below this input side, augment the CIFAR way (pad and crop); above it, the ImageNet way.
SMALL_INPUT = 64

# ImageNet's RGB eigenvalues and eigenvectors (columns) for pixels in [0, 1], as used by fb.resnet.torch.
PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
PCA_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# ITU-R 601 luma weights: how a colour shift shows on a one-channel image.
LUMA = (0.299, 0.587, 0.114)



# --- What the network expects -------------------------------------------------------------------------

@dataclass(frozen=True)
class Preprocess:
    """Everything needed to turn an image into the network's input; saved in checkpoints."""

    input_size: int  # the network's input side (32, 224, 227 ...)
    store_size: int  # side at which images are decoded and kept as uint8
    in_channels: int  # 1 or 3
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if self.in_channels not in (1, 3):
            raise ValueError(f"Images must have 1 or 3 channels, not {self.in_channels}.")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f"mean and std need one value per channel ({self.in_channels}).")
        if self.input_size < 1 or self.store_size < 1:
            raise ValueError("input_size and store_size must be positive.")

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        """From to_dict()'s output; store_size and in_channels may be left out (the defaults for input_size
        and one channel per mean), as in checkpoints that name only what the network needs."""
        size = int(d["input_size"])
        return cls(size, int(d.get("store_size", default_store_size(size))), int(d.get("in_channels", len(d["mean"]))),
                   tuple(float(m) for m in d["mean"]), tuple(float(s) for s in d["std"]))


def default_store_size(input_size: int) -> int:
    """Small inputs are kept at their own size; photos at 256/224 of it (AlexNet: resize 256, crop 224)."""
    return input_size if input_size <= SMALL_INPUT else round(input_size * 256 / 224)


def per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Adapts RGB statistics to one channel (their average) or one-channel statistics to RGB (repeated)."""
    if len(values) == channels:
        return tuple(values)
    if channels == 1:
        return (sum(values) / len(values),)
    return tuple(values) * channels if len(values) == 1 else tuple(values[:channels])


# --- From stored images to the network's input -------------------------------------------------------

def eval_transform(images_uint8: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """[B,C,S,S] (or [C,S,S]) uint8 → float32 normalised [B,C,input,input], on the same device.

    Centre crop when the stored side is larger than the input, bilinear resize when it is smaller.
    """
    single = images_uint8.ndim == 3
    x = _check_batch(images_uint8[None] if single else images_uint8, pre)
    x = _fit_to_input(x, pre.input_size)
    x = _normalise(x, pre)
    return x[0] if single else x


# What train_transform's flip does to a batch: the training setting ``flip`` (config.FLIPS: random or
# alternating) picks one of these per epoch (train._epoch_flip).
BATCH_FLIPS = ("random", "all", "none")


def train_transform(images_uint8: torch.Tensor, pre: Preprocess, generator: torch.Generator | None = None,
                    *, pca_lighting: float = 0.0, cutout: int = 0, flip: str = "random",
                    crop_pad: int | None = None) -> torch.Tensor:
    """[B,C,S,S] uint8 → augmented float32 normalised [B,C,input,input], on the same device.

    Deterministic given ``generator`` (any device; None uses torch's default CPU generator).
    ``pca_lighting`` is the standard deviation of the lighting noise alpha (the paper uses 0.1; 0 is off).
    ``cutout`` is the side in pixels of the square blanked out of each image (0 is off). ``crop_pad``: how far a
    small input is padded (by reflection) before its random crop; None: an eighth of the input side.
    ``flip``: "random" mirrors each image with probability 1/2; "all" and "none" mirror every image or none
    (the alternating flip of train.py, which decides per epoch, uses those).
    """
    x = _check_batch(images_uint8, pre)
    if pre.input_size <= SMALL_INPUT:
        x = _fit_to_input(x, pre.input_size)
        x = random_crop_with_padding(x, pre.input_size // 8 if crop_pad is None else crop_pad, generator)
    else:
        x = random_resized_crop(F.to_dtype(x, torch.float32, scale=True), pre.input_size, generator)
    if flip == "random":
        x = random_horizontal_flip(x, generator)
    elif flip == "all":
        x = x.flip(-1)
    elif flip != "none":
        raise ValueError(f"flip must be one of {', '.join(BATCH_FLIPS)}, not {flip!r}.")
    if pca_lighting:
        x = pca_lighting_noise(x, pca_lighting, generator)
    x = _normalise(x, pre)
    if cutout:
        x = random_cutout(x, cutout, generator)
    return x


# --- Test-time augmentation ---------------------------------------------------------------------------

# Evaluation's and prediction's choices: the plain view, it and its mirror image, or the paper's ten crops.
TTA_CHOICES = ("none", "flip", "ten-crop")
# Validation after each training epoch: ten-crop would make every epoch's validation ten times as long.
VALIDATION_TTA = ("none", "flip")
TTA_VIEWS = {"none": 1, "flip": 2, "ten-crop": 10}   # views per image


def check_tta(tta: str) -> str:
    if tta not in TTA_CHOICES:
        raise ValueError(f"Test-time augmentation must be one of: {', '.join(TTA_CHOICES)} (not {tta!r}).")
    return tta


def small_image_pad(input_size: int) -> int:
    """How far ten-crop pads an image stored at its input size: the corner crops shift by this much."""
    return input_size // 16


def tta_views(stored: torch.Tensor, pre: Preprocess, tta: str, *, pad: int | None = None) -> torch.Tensor:
    """uint8 [C, store, store] (decode_image's output), or a batch [B, C, store, store] of them → the
    normalised views [V, C, input, input], or [B * V, ...] with each image's V views consecutive
    (V = TTA_VIEWS[tta]); ``average_views`` averages the network's answers over them.

    View 0 of each image is always the plain view, ``eval_transform``. Flip adds the mirror image. Ten-crop
    gives torchvision's order: top-left, top-right, bottom-left, bottom-right and centre crops, then the same
    five of the mirrored image. ``pad`` overrides ``small_image_pad`` for images stored at their input size
    (bench/tta_shift.py tries several).
    """
    batch = stored if stored.ndim == 4 else stored[None]
    plain = eval_transform(batch, pre)
    if check_tta(tta) == "none":
        return plain
    if tta == "flip":
        return torch.stack([plain, plain.flip(-1)], dim=1).flatten(0, 1)
    return torch.cat([_ten_crop(image, view, pre, pad) for image, view in zip(batch, plain)])


def _ten_crop(stored: torch.Tensor, plain: torch.Tensor, pre: Preprocess, pad: int | None) -> torch.Tensor:
    size = [pre.input_size, pre.input_size]
    if stored.shape[-1] > pre.input_size:
        crops = F.ten_crop(stored, size)  # uint8 crops of the input's size: eval_transform only normalises them
        return eval_transform(torch.stack(crops), pre)
    # Stored at (or below) the input size: crop from the reflect-padded plain view (training pads so too).
    # Padding commutes with the per-channel normalisation, so padding the normalised view is the same.
    pad = small_image_pad(pre.input_size) if pad is None else pad
    padded = nnf.pad(plain[None], (pad, pad, pad, pad), mode="reflect")[0] if pad else plain
    return torch.stack(F.ten_crop(padded, size))  # the margin is even, so the centre crop is the plain view


def average_views(logits: torch.Tensor, tta: str) -> torch.Tensor:
    """The network's logits for ``tta_views``' views [B * V, K] → class probabilities per image [B, K]: the
    softmax averaged over each image's views."""
    probabilities = nnf.softmax(logits.float(), dim=1)
    return probabilities.view(-1, TTA_VIEWS[tta], probabilities.shape[1]).mean(1)


# --- Augmentation, per sample ------------------------------------------------------------------------

def random_crop_with_padding(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pads each image by ``pad`` pixels (reflection) and crops it back to its size at a random offset."""
    if pad == 0:
        return x
    b, _, h, w = x.shape
    padded = nnf.pad(x, (pad, pad, pad, pad), mode="reflect")
    top = _randint(2 * pad + 1, b, generator).to(x.device)
    left = _randint(2 * pad + 1, b, generator).to(x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = left[:, None] + torch.arange(w, device=x.device)  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indexing picks each sample's own window: [B, H, W, C] → [B, C, H, W].
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()


def random_resized_crop(x: torch.Tensor, size: int, generator: torch.Generator | None = None,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop, one box per sample, cropped and resized by one roi_align call.

    Like torchvision, it tries ``attempts`` boxes of random area and aspect ratio and keeps the first that
    fits; a sample for which none fits gets the whole image. ``x`` is float [B,C,H,W].
    """
    b, _, h, w = x.shape
    area = h * w * _uniform(scale[0], scale[1], (b, attempts), generator)
    aspect = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), (b, attempts), generator))
    box_w = torch.sqrt(area * aspect).round()
    box_h = torch.sqrt(area / aspect).round()
    fits = (box_w >= 1) & (box_w <= w) & (box_h >= 1) & (box_h <= h)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first attempt that fits
    found = fits.any(dim=1)
    box_w = torch.where(found, box_w.gather(1, first)[:, 0], float(w))
    box_h = torch.where(found, box_h.gather(1, first)[:, 0], float(h))
    left = (_uniform(0, 1, (b,), generator) * (w - box_w + 1)).floor()
    top = (_uniform(0, 1, (b,), generator) * (h - box_h + 1)).floor()
    index = torch.arange(b, dtype=box_w.dtype, device=box_w.device)
    boxes = torch.stack([index, left, top, left + box_w, top + box_h], dim=1)
    # aligned=True puts pixel i at [i, i+1), so integer boxes are exact; sampling_ratio=-1 averages
    # ceil(box/size) points per output pixel, which antialiases when the box is larger than the output.
    return roi_align(x, boxes.to(x.device, x.dtype), output_size=size, sampling_ratio=-1, aligned=True)


def random_horizontal_flip(x: torch.Tensor, generator: torch.Generator | None = None,
                           p: float = 0.5) -> torch.Tensor:
    """Mirrors each image left to right with probability ``p``."""
    flip = (_uniform(0, 1, (x.shape[0],), generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zeroes a ``size`` x ``size`` square of each normalised image (zero is the mean), centred anywhere.

    As in DeVries & Taylor (2017) the centre may lie near the border, so part of the square can fall outside.
    """
    b, _, h, w = x.shape
    cy = _randint(h, b, generator).to(x.device)
    cx = _randint(w, b, generator).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - size // 2)  # [B, H]
    cols = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - size // 2)  # [B, W]
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0.0)


def pca_lighting_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adds the paper's lighting noise: eigvec @ (alpha * eigval) with alpha ~ N(0, std), one per sample.

    ``x`` is float in [0, 1]; one-channel images get the brightness (luma) of the colour shift.
    """
    alpha = torch.randn((x.shape[0], 3), generator=generator, device=_device_of(generator)) * std
    eigval = torch.tensor(PCA_EIGENVALUES, device=alpha.device)
    eigvec = torch.tensor(PCA_EIGENVECTORS, device=alpha.device)
    shift = (alpha * eigval) @ eigvec.T  # [B, 3] RGB
    if x.shape[1] == 1:
        shift = shift @ torch.tensor(LUMA, device=alpha.device)[:, None]
    return x + shift.to(x.device, x.dtype)[:, :, None, None]


def _check_batch(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != pre.in_channels:
        raise ValueError(
            f"Expected uint8 images of shape [batch, {pre.in_channels}, side, side], "
            f"got {x.dtype} {tuple(x.shape)}."
        )
    return x


def _fit_to_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B,C,S,S] → float [0, 1] [B,C,size,size]: centre crop when larger, bilinear resize when smaller."""
    if x.shape[-1] > size or x.shape[-2] > size:
        x = F.center_crop(x, [size, size])
    x = F.to_dtype(x, torch.float32, scale=True)
    if x.shape[-1] < size or x.shape[-2] < size:
        x = F.resize(x, [size, size], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    return x


def _normalise(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    return F.normalize(x, list(pre.mean), list(pre.std))


def _device_of(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """Uniform numbers drawn on the generator's device, where they stay: no host round trip per batch."""
    u = torch.rand(shape, generator=generator, device=_device_of(generator))
    return low + (high - low) * u


def _randint(high: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=_device_of(generator))
