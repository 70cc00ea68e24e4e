"""Every AlexNet variant AlexNet Studio knows, and the registry that describes them.

Each variant is one small ``nn.Module`` in the style of torchvision's ``alexnet.py``: a ``features``
``nn.Sequential`` of convolutions and pools, an ``avgpool`` (identity unless the design has one) and a
``classifier`` ``nn.Sequential`` of fully connected layers. Layers carry the paper's names (conv1 … conv5,
fc6 … fc8) so that summaries, activations and checkpoints all speak the same language.

The registry (``MODELS``) maps a fixed name to a ``ModelSpec``: the builder plus the metadata that
training, prediction and the UI need (input size and channels, mean/std, class count, where the design
comes from), in the spirit of torchvision's weight enums and timm's ``pretrained_cfg``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as nnf
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FASHION_MEAN = (0.2860,)
FASHION_STD = (0.3530,)


class _Layers:
    """Builds an ``OrderedDict`` of named layers: conv1, bn1, relu1, lrn1, pool1, …, fc6, relu6, drop7 …

    Numbering follows the paper: convolutions and fully connected layers share one counter, and the
    ReLU, LRN, pool and dropout that belong to a layer carry its number.
    """

    def __init__(self, batch_norm: bool = False):
        self.batch_norm = batch_norm
        self.n = 0
        self.layers: OrderedDict[str, nn.Module] = OrderedDict()

    def conv(self, cin, cout, kernel, stride=1, padding=0, groups=1, pool=0):
        """A conv with its BatchNorm and ReLU; ``pool=k`` puts a kxk/k max-pool straight after the conv,
        before BatchNorm and ReLU (airbench's order), so that those run on a quarter of the values."""
        self.n += 1
        # With BatchNorm right after, a conv bias is redundant (BN's shift does its job).
        self.layers[f"conv{self.n}"] = nn.Conv2d(
            cin, cout, kernel, stride, padding, groups=groups, bias=not self.batch_norm
        )
        if pool:
            self.pool(pool, pool)
        if self.batch_norm:
            self.layers[f"bn{self.n}"] = nn.BatchNorm2d(cout)
        self.layers[f"relu{self.n}"] = nn.ReLU(inplace=True)
        return self

    def lrn(self, size=5, alpha=1e-4, beta=0.75, k=2.0):
        # The paper's response normalisation: size 5, alpha 1e-4, beta 0.75, k 2.
        self.layers[f"lrn{self.n}"] = nn.LocalResponseNorm(size, alpha, beta, k)
        return self

    def pool(self, kernel=3, stride=2):
        self.layers[f"pool{self.n}"] = nn.MaxPool2d(kernel, stride)
        return self

    def fc(self, fin, fout, dropout=0.0, relu=True):
        self.n += 1
        if dropout:
            self.layers[f"drop{self.n}"] = nn.Dropout(dropout)
        self.layers[f"fc{self.n}"] = nn.Linear(fin, fout)
        if relu:
            self.layers[f"relu{self.n}"] = nn.ReLU(inplace=True)
        return self

    def take(self) -> nn.Sequential:
        """Returns the layers collected so far as a Sequential and starts a new one (numbering goes on)."""
        seq, self.layers = nn.Sequential(self.layers), OrderedDict()
        return seq


class AlexNetBase(nn.Module):
    """What every variant shares: features → avgpool → flatten → classifier."""

    features: nn.Sequential
    avgpool: nn.Module
    classifier: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class AlexNet(AlexNetBase):
    """Krizhevsky, Sutskever & Hinton (2012), one tower: 96-256-384-384-256, LRN, overlapping pools.

    ``groups=2`` gives the paper's two-GPU connectivity (conv2, conv4 and conv5 see only their own half).
    Takes 227x227: the paper's "224" does not divide (see geometry.py's fit check).
    """

    def __init__(self, num_classes=1000, in_channels=3, batch_norm=False, dropout=0.5, groups=1):
        super().__init__()
        L = _Layers(batch_norm)
        L.conv(in_channels, 96, 11, stride=4).lrn().pool()
        L.conv(96, 256, 5, padding=2, groups=groups).lrn().pool()
        L.conv(256, 384, 3, padding=1)
        L.conv(384, 384, 3, padding=1, groups=groups)
        L.conv(384, 256, 3, padding=1, groups=groups).pool()
        self.features = L.take()
        self.avgpool = nn.Identity()
        L.fc(256 * 6 * 6, 4096, dropout).fc(4096, 4096, dropout).fc(4096, num_classes, relu=False)
        self.classifier = L.take()


class AlexNetTorchvision(AlexNetBase):
    """torchvision.models.alexnet: 64-192-384-256-256 (the "one weird trick" widths), conv1 padded by 2,
    no LRN, and an adaptive average pool so that any input of at least 63x63 reaches the classifier."""

    def __init__(self, num_classes=1000, in_channels=3, batch_norm=False, dropout=0.5):
        super().__init__()
        L = _Layers(batch_norm)
        L.conv(in_channels, 64, 11, stride=4, padding=2).pool()
        L.conv(64, 192, 5, padding=2).pool()
        L.conv(192, 384, 3, padding=1)
        L.conv(384, 256, 3, padding=1)
        L.conv(256, 256, 3, padding=1).pool()
        self.features = L.take()
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        L.fc(256 * 6 * 6, 4096, dropout).fc(4096, 4096, dropout).fc(4096, num_classes, relu=False)
        self.classifier = L.take()


class AlexNetFlowers(AlexNetBase):
    """The PyTorch flowers tutorial's half-width AlexNet: 48-128-192-192-128, FC 2048-2048, 5 classes."""

    def __init__(self, num_classes=5, in_channels=3, batch_norm=False, dropout=0.5):
        super().__init__()
        L = _Layers(batch_norm)
        L.conv(in_channels, 48, 11, stride=4, padding=2).pool()
        L.conv(48, 128, 5, padding=2).pool()
        L.conv(128, 192, 3, padding=1)
        L.conv(192, 192, 3, padding=1)
        L.conv(192, 128, 3, padding=1).pool()
        self.features = L.take()
        self.avgpool = nn.Identity()
        L.fc(128 * 6 * 6, 2048, dropout).fc(2048, 2048, dropout).fc(2048, num_classes, relu=False)
        self.classifier = L.take()


class AlexNetCifar(AlexNetBase):
    """The Paddle CIFAR-10 tutorial's net: full widths, conv1 7x7/2, the last pool removed, FC 1024-512."""

    def __init__(self, num_classes=10, in_channels=3, batch_norm=False, dropout=0.5):
        super().__init__()
        L = _Layers(batch_norm)
        L.conv(in_channels, 96, 7, stride=2, padding=2).pool()
        L.conv(96, 256, 5, padding=2).pool()
        L.conv(256, 384, 3, padding=1)
        L.conv(384, 384, 3, padding=1)
        L.conv(384, 256, 3, padding=1)
        self.features = L.take()
        self.avgpool = nn.Identity()
        L.fc(256 * 3 * 3, 1024, dropout).fc(1024, 512, dropout).fc(512, num_classes, relu=False)
        self.classifier = L.take()


class AlexNetCifarSmall(AlexNetBase):
    """The small CIFAR-10 net of the TensorFlow/cuda-convnet tutorials: two 5x5 convs of 64 without
    padding, 3x3/2 pools, FC 384-192."""

    def __init__(self, num_classes=10, in_channels=3, batch_norm=False, dropout=0.0):
        super().__init__()
        L = _Layers(batch_norm)
        L.conv(in_channels, 64, 5).pool()
        L.conv(64, 64, 5).pool()
        self.features = L.take()
        self.avgpool = nn.Identity()
        L.fc(64 * 4 * 4, 384, dropout).fc(384, 192, dropout).fc(192, num_classes, relu=False)
        self.classifier = L.take()


class AlexNetCifarNPU(AlexNetBase):
    """The Ascend (NPU) tutorial's CIFAR-10 net: conv1 4x4/2 unpadded, 64-256-384-384-256, 2x2 pools with
    strides 1, 2, 1, and a full-size classifier 9216-4608-4608.

    The tutorial's comments give every shape at 32x32: conv1 64x15x15, pool 64x14x14, conv2 256x14x14,
    pool 256x7x7, conv3-conv5 at 7x7, pool 256x6x6, then 9,216 values into fc6.
    """

    def __init__(self, num_classes=10, in_channels=3, batch_norm=False, dropout=0.5):
        super().__init__()
        L = _Layers(batch_norm)
        L.conv(in_channels, 64, 4, stride=2).pool(2, 1)
        L.conv(64, 256, 3, padding=1).pool(2, 2)
        L.conv(256, 384, 3, padding=1)
        L.conv(384, 384, 3, padding=1)
        L.conv(384, 256, 3, padding=1).pool(2, 1)
        self.features = L.take()
        self.avgpool = nn.Identity()
        L.fc(256 * 6 * 6, 4608, dropout).fc(4608, 4608, dropout).fc(4608, num_classes, relu=False)
        self.classifier = L.take()


class AlexNetCifarHires(AlexNetBase):
    """A 32x32 AlexNet that keeps resolution: torchvision's widths 64-192-384-256-256 as 3x3 convs with
    BatchNorm, 2x2 max-pools after conv1, conv2 and conv5 (32 → 16 → 8 → 4), FC 4096-1024-512.

    AlexNet Studio's own CIFAR-10 design (the shipped checkpoint): the Paddle net's early downsampling to
    3x3 maps caps it near 80%; this one sees 8x8 maps in conv3–conv5 and reaches 90%.
    """

    def __init__(self, num_classes=10, in_channels=3, batch_norm=True, dropout=0.5, pool_first=False):
        super().__init__()
        L = _Layers(batch_norm)
        # pool_first: conv → pool → BN → ReLU instead of conv → BN → ReLU → pool (see alexnet_cifar_fast).
        def conv_pooled(cin, cout):
            return L.conv(cin, cout, 3, padding=1, pool=2) if pool_first else L.conv(cin, cout, 3, padding=1).pool(2, 2)

        conv_pooled(in_channels, 64)
        conv_pooled(64, 192)
        L.conv(192, 384, 3, padding=1)
        L.conv(384, 256, 3, padding=1)
        conv_pooled(256, 256)
        self.features = L.take()
        self.avgpool = nn.Identity()
        L.fc(256 * 4 * 4, 1024, dropout).fc(1024, 512, dropout).fc(512, num_classes, relu=False)
        self.classifier = L.take()


class ScaledLinear(nn.Linear):
    """A linear layer whose output is multiplied by a fixed ``scale``: airbench's last layer (scale 1/9), which
    keeps the first logits small and slows the layer's learning next to the convs' under a high learning rate."""

    def __init__(self, in_features: int, out_features: int, scale: float, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:.4g}"


class AlexNetCifarAir(AlexNetBase):
    """AlexNet's five convs and three max-pools, laid out as airbench lays out its net for 32x32 (Jordan 2024):
    a 2x2 conv1 made to be whitened (``train --whiten``), then 3x3 convs with BatchNorm, each pool straight
    after its conv (31 → 15 → 7 → 3), a global max-pool and one linear layer."""

    def __init__(self, num_classes=10, in_channels=3, batch_norm=True, dropout=0.0, widths=(64, 256, 256, 256),
                 pools=(True, True, False, True)):
        # widths and pools: conv2–conv5's channels and which of them are max-pooled (three of the four).
        super().__init__()
        L = _Layers(batch_norm)
        # conv1 sees 2x2 patches: both signs of each whitening direction make 2 * C * 2 * 2 filters (24 for RGB).
        # No BatchNorm after it: whitened outputs have unit variance already.
        width = 2 * in_channels * 4
        L.n = 1
        L.layers["conv1"] = nn.Conv2d(in_channels, width, 2)
        L.layers["relu1"] = nn.ReLU(inplace=True)
        for out, pool in zip(widths, pools):
            L.conv(width, out, 3, padding=1, pool=2 if pool else 0)
            width = out
        self.features = L.take()
        for conv in [m for m in self.features if isinstance(m, nn.Conv2d)][1:]:
            # airbench's identity start: each conv first passes its inputs on (an implicit residual), so the
            # five-conv stack trains from the first step as a shallower net would.
            with torch.no_grad():
                nn.init.dirac_(conv.weight[:min(conv.in_channels, conv.out_channels)])
        self.avgpool = nn.AdaptiveMaxPool2d(1)
        L.n += 1
        if dropout:
            L.layers[f"drop{L.n}"] = nn.Dropout(dropout)
        L.layers[f"fc{L.n}"] = ScaledLinear(width, num_classes, scale=1 / 9)
        self.classifier = L.take()


class AlexNetFashion(AlexNetBase):
    """The MXNet (d2l) Fashion-MNIST AlexNet: full width, one input channel, conv1 11x11/4 unpadded,
    so 224 → 54 → 26 → 12 → 5 and FC6 sees 256x5x5 = 6,400 values."""

    def __init__(self, num_classes=10, in_channels=1, batch_norm=False, dropout=0.5):
        super().__init__()
        L = _Layers(batch_norm)
        L.conv(in_channels, 96, 11, stride=4).pool()
        L.conv(96, 256, 5, padding=2).pool()
        L.conv(256, 384, 3, padding=1)
        L.conv(384, 384, 3, padding=1)
        L.conv(384, 256, 3, padding=1).pool()
        self.features = L.take()
        self.avgpool = nn.Identity()
        L.fc(256 * 5 * 5, 4096, dropout).fc(4096, 4096, dropout).fc(4096, num_classes, relu=False)
        self.classifier = L.take()


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: how to build a variant and what it expects."""

    name: str
    builder: Callable[..., AlexNetBase]
    title: str
    input_size: int
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    notes: str
    builder_kwargs: dict = field(default_factory=dict)
    batch_norm: bool = False          # the variant's own default; True only where BatchNorm is part of the design

    def build(self, num_classes: int | None = None, in_channels: int | None = None,
              batch_norm: bool | None = None) -> AlexNetBase:
        """The variant; None for any argument means the variant's own default."""
        return self.builder(
            num_classes=num_classes or self.num_classes,
            in_channels=in_channels or self.in_channels,
            batch_norm=self.batch_norm if batch_norm is None else batch_norm,
            **self.builder_kwargs,
        )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "alexnet", AlexNet, "AlexNet (2012 paper, one tower)", 227, 3, 1000,
            IMAGENET_MEAN, IMAGENET_STD,
            source="Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep Convolutional "
                   "Neural Networks (NeurIPS 2012)",
            notes="Convs 96-256-384-384-256 with local response normalisation (size 5, alpha 1e-4, "
                  "beta 0.75, k 2) after conv1 and conv2, and overlapping 3x3/2 max-pools. The paper says "
                  "224x224 inputs, but (224 − 11) / 4 + 1 is not a whole number: only 227 gives the 55x55 "
                  "maps and the 6x6x256 = 9,216 inputs of FC6 that the paper describes.",
        ),
        ModelSpec(
            "alexnet_grouped", AlexNet, "AlexNet with the paper's two-GPU grouping", 227, 3, 1000,
            IMAGENET_MEAN, IMAGENET_STD,
            source="Krizhevsky et al. 2012, Figure 2 (the net split across two GTX 580 GPUs)",
            notes="Same as alexnet, but conv2, conv4 and conv5 use groups=2: each half of the channels "
                  "sees only the half of the previous layer on its own GPU. That saves 1.4 M parameters "
                  "and is why the paper's filters split into a colour group and a colour-blind group.",
            builder_kwargs={"groups": 2},
        ),
        ModelSpec(
            "alexnet_torchvision", AlexNetTorchvision, "torchvision's AlexNet", 224, 3, 1000,
            IMAGENET_MEAN, IMAGENET_STD,
            source="torchvision.models.alexnet, after Krizhevsky, One weird trick for parallelizing "
                   "convolutional neural networks (2014)",
            notes="Widths 64-192-384-256-256, no LRN, conv1 padded by 2 so that 224 works "
                  "((224 + 4 − 11) / 4 + 1 = 55), and an adaptive average pool to 6x6 in front of the "
                  "classifier, which lets it take any input of 63x63 or more.",
        ),
        ModelSpec(
            "alexnet_flowers", AlexNetFlowers, "Half-width AlexNet for flowers", 224, 3, 5,
            IMAGENET_MEAN, IMAGENET_STD,
            source="The PyTorch flowers tutorial (WZMIAOMIAO deep-learning-for-image-processing, "
                   "flower_photos, 5 classes)",
            notes="Every width halved (48-128-192-192-128, FC 2048-2048) to train on one small GPU; conv1 "
                  "is padded by 2 so that 224 gives 55x55, as in torchvision. 14.6 M parameters, a quarter "
                  "of the original.",
        ),
        ModelSpec(
            "alexnet_cifar", AlexNetCifar, "AlexNet for CIFAR-10 (Paddle tutorial)", 32, 3, 10,
            CIFAR10_MEAN, CIFAR10_STD,
            source="The PaddlePaddle CIFAR-10 AlexNet tutorial",
            notes="Adapted to 32x32: conv1 shrinks to 7x7 with stride 2 and padding 2 (32 → 15), the pools "
                  "stay 3x3/2, the last pool is removed so that 3x3 maps remain, and the classifier shrinks "
                  "to 2,304 → 1024 → 512 → 10. The fast early downsampling (32 → 15 → 7 → 3) caps its "
                  "accuracy near 80%.",
        ),
        ModelSpec(
            "alexnet_cifar_small", AlexNetCifarSmall, "Small two-conv CIFAR-10 net", 32, 3, 10,
            CIFAR10_MEAN, CIFAR10_STD,
            source="The TensorFlow / cuda-convnet CIFAR-10 tutorial model",
            notes="Only two 5x5 convolutions of 64 channels without padding (32 → 28 → 13 → 9 → 4), "
                  "3x3/2 pools and FC 384-192: half a million parameters, trains in minutes on a CPU.",
        ),
        ModelSpec(
            "alexnet_cifar_npu", AlexNetCifarNPU, "AlexNet for CIFAR-10 (Ascend tutorial)", 32, 3, 10,
            CIFAR10_MEAN, CIFAR10_STD,
            source="The Ascend (torch_npu) CIFAR-10 AlexNet tutorial",
            notes="Keeps resolution with an unpadded 4x4/2 conv1 and 2x2 pools of stride 1, 2, 1 (32 → 15 → "
                  "14 → 7 → 6), so FC6 sees 256x6x6 = 9,216 values as in the paper, with a 4608-wide "
                  "classifier: 67 M parameters, 95% of them in the fully connected layers.",
        ),
        ModelSpec(
            "alexnet_cifar_hires", AlexNetCifarHires, "AlexNet for CIFAR-10 that keeps resolution", 32, 3, 10,
            CIFAR10_MEAN, CIFAR10_STD,
            source="AlexNet Studio's own design for its shipped CIFAR-10 checkpoint, after torchvision's "
                   "widths and the small-image practice of 3x3 convs with BatchNorm (as in VGG and airbench)",
            notes="The tutorials' CIFAR nets shrink 32 → 15 → 7 → 3 by conv2, which caps them near 80%. This "
                  "one uses 3x3 convs with padding, so only its three 2x2 max-pools shrink the maps (32 → 16 "
                  "→ 8 → 4): conv3–conv5 still see 8x8. BatchNorm after every conv is part of the design "
                  "(on by default, convs without bias), and FC6 sees 256x4x4 = 4,096 values.",
            batch_norm=True,
        ),
        ModelSpec(
            "alexnet_cifar_fast", AlexNetCifarHires, "alexnet_cifar_hires with pools before BatchNorm", 32, 3,
            10, CIFAR10_MEAN, CIFAR10_STD,
            source="alexnet_cifar_hires with the layer order of airbench's ConvGroup (Keller Jordan, "
                   "94% on CIFAR-10 in 3.29 seconds on a single GPU, 2024): conv → max-pool → BatchNorm → ReLU",
            notes="The same layers and parameters as alexnet_cifar_hires, but conv1, conv2 and conv5 are "
                  "max-pooled straight away, so their BatchNorm and ReLU work on a quarter of the values. "
                  "Max-pool and ReLU commute, and pool and BatchNorm nearly do (exactly where BN's scale "
                  "is positive), so it computes almost the same function; a training step runs about 1.28x "
                  "faster on a CPU (bench/layer_order.py), which buys more epochs in the same hour.",
            builder_kwargs={"pool_first": True},
            batch_norm=True,
        ),
        ModelSpec(
            "alexnet_cifar_air", AlexNetCifarAir, "AlexNet's five convs and three pools, laid out as airbench", 32,
            3, 10, CIFAR10_MEAN, CIFAR10_STD,
            source="AlexNet Studio's own design after airbench94 (Keller Jordan, 94% on CIFAR-10 in 3.29 seconds on "
                   "a single GPU, 2024), kept to AlexNet's five conv layers, three max-pools and ReLU",
            notes="conv1 is a 2x2 conv of 24 filters that train --whiten sets to a whitening of the training "
                  "patches and freezes (no BatchNorm after it); conv2–conv5 are 3x3 convs of 64, 256, 256 and 256 "
                  "with BatchNorm, each started as an identity (dirac) so that the stack trains as a shallower net "
                  "would, and pooled before their BatchNorm where they pool: 32 → 31 → 15 → 7 → 3. A global max-pool "
                  "and one linear layer whose output is scaled by 1/9 make the classifier. airbench94 has seven "
                  "convs (two per width after conv1); to keep AlexNet's five, this net drops the second 64-wide "
                  "conv at 15x15 and the last 256-wide conv at 3x3, the two cheapest. 1.35 M "
                  "parameters, 105 M multiply-adds per image at 32x32: a fifth of alexnet_cifar_fast's parameters "
                  "and 0.6 of its work.",
            batch_norm=True,
        ),
        ModelSpec(
            "alexnet_fashion", AlexNetFashion, "AlexNet for Fashion-MNIST (MXNet d2l)", 224, 1, 10,
            FASHION_MEAN, FASHION_STD,
            source="Dive into Deep Learning (d2l.ai), section 'AlexNet', MXNet version",
            notes="Full width with one input channel: Fashion-MNIST's 28x28 images are upsampled to 224. "
                  "conv1 is unpadded, so 224 → 54 → 26 → 12 → 5 and FC6 sees 6,400 values instead of "
                  "9,216.",
        ),
    ]
}


def default_class_names(num_classes: int) -> list[str]:
    """Names for a model that came without any: "class 0", "class 1", …"""
    return [f"class {i}" for i in range(num_classes)]


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or a ValueError that lists the names there are."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"Unknown model '{name}'. Choose one of: {', '.join(MODELS)}.") from None


def build_model(name: str, num_classes: int | None = None, in_channels: int | None = None,
                batch_norm: bool | None = None) -> AlexNetBase:
    """Builds a registry variant; class and channel counts default to the variant's own."""
    return get_spec(name).build(num_classes, in_channels, batch_norm)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The network's first convolution (conv1)."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@torch.no_grad()
def whiten_conv_(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4, max_chunk: int = 256) -> int:
    """Sets ``conv``'s filters to a whitening of its input patches, as airbench's first layer (Jordan 2024).

    ``images`` are normalised float [N, C, H, W]. The filters become the eigenvectors of the patches'
    covariance, largest first, each scaled by 1/sqrt(eigenvalue + eps) and given with both signs, so that
    the ReLU after it passes every direction on. Outputs are then uncorrelated over the data, which makes the
    next layer's problem well conditioned from the first step. Filters beyond twice the patch size keep their
    random start. Returns how many filters were set.
    """
    if conv.groups != 1:
        raise ValueError("Whitening needs a convolution without groups.")
    kh, kw = conv.kernel_size
    dims = conv.in_channels * kh * kw
    cov = torch.zeros(dims, dims, dtype=torch.float64, device=images.device)
    count = 0
    patches_per_image = nnf.unfold(images[:1].float(), (kh, kw), stride=conv.stride).shape[-1]
    chunk = max(1, min(max_chunk, (1 << 24) // (patches_per_image * dims)))   # at most 16 M values at a time
    for start in range(0, len(images), chunk):
        # unfold: [B, C*kh*kw, L] → every patch a row (padding left out: border patches are part zeros)
        patches = nnf.unfold(images[start:start + chunk].float(), (kh, kw), stride=conv.stride)
        patches = patches.transpose(1, 2).reshape(-1, dims).double()
        cov += patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov / max(count, 1))       # ascending
    n = min(conv.out_channels // 2, dims)
    top = eigenvectors.flip(1)[:, :n].T / torch.sqrt(eigenvalues.flip(0)[:n].clamp(min=0) + eps)[:, None]
    filters = torch.cat([top, -top]).reshape(2 * n, conv.in_channels, kh, kw)
    conv.weight[:2 * n] = filters.to(conv.weight)
    return 2 * n
