"""The training settings, described once: for each ``TrainConfig`` setting its label, kind, bounds, help and
where it shows. The Train tab's form, its API (``/train`` takes one settings object) and the command line's
``train`` flags are all made from ``TRAIN_SETTINGS``, and ``config_from_settings`` turns a settings object from
any of them into a TrainConfig the same way, so the three cannot drift.

A settings object is a dict of setting names and values, plus an optional ``"recipe"``: the recipe's values
first, then the settings given, then TrainConfig's defaults, exactly as ``--recipe`` and the flags combine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import AMP_CHOICES, FLIPS, OPTIMIZERS, RECIPES, RETRAIN, SCHEDULES, ConfigError, TrainConfig
from .devices import DEVICE_CHOICES
from .models import MODELS
from .transforms import VALIDATION_TTA

DEFAULTS = TrainConfig()
# TrainConfig settings that are neither flags nor fields: DataLoader workers, for data too large for memory.
LIBRARY_ONLY = ("workers",)


@dataclass(frozen=True)
class Setting:
    """One TrainConfig setting as a person sets it."""

    name: str                  # the TrainConfig field: the settings object's key; the flag is --name-with-dashes
    label: str                 # the form's label, and how a refusal names the setting
    kind: str                  # "int", "float", "choice", "switch" (true/false), "text"
    help: str = ""
    choices: tuple = ()        # a "choice" setting's values
    minimum: float | None = None
    maximum: float | None = None
    place: str = "form"        # "form": the Train tab's form; "more": its "More settings"; "cli": command line only
    recipe: bool = True        # a recipe sets it (its value, or the default); False: what, where and how long

    @property
    def default(self):
        return getattr(DEFAULTS, self.name)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def optional(self) -> bool:
        """Whether None is a value: the variant's own, all, or no limit (as its help says)."""
        return self.default is None


def _s(name, label, kind, help="", **more) -> Setting:
    return Setting(name, label, kind, help, **more)


TRAIN_SETTINGS: tuple[Setting, ...] = (
    # What to train, on what, where, and how long: a recipe leaves these as they are.
    _s("model", "Model", "choice", "the variant (see `models`)", choices=tuple(MODELS), recipe=False),
    _s("data", "Data", "text", "cifar10, fashion-mnist, flowers, or an ImageFolder directory", recipe=False),
    _s("device", "Device", "text", f"one of {', '.join(DEVICE_CHOICES)} (or cuda:N)", recipe=False),
    _s("start_from", "Start from", "text",
       "imagenet (torchvision's ImageNet AlexNet, downloaded on first use), a checkpoint, or nothing: random "
       "weights. The start decides the model; its last layer is made new for your classes", place="more",
       recipe=False),
    _s("retrain", "Retrain", "choice",
       "with a start: all: every layer, the pretrained ones at a tenth of the learning rate; classifier: the fully "
       "connected layers (fc6-fc8) on the conv layers' features, computed once (the conv layers frozen)",
       choices=RETRAIN, place="more", recipe=False),
    _s("epochs", "Epochs", "int", minimum=1, maximum=1000, recipe=False),
    _s("limit", "Images per split", "int", "at most this many images per split (default: all)", minimum=2,
       recipe=False),
    # The recipe: optimiser, schedule, regularisation and augmentation.
    _s("batch_size", "Batch size", "int", minimum=2, maximum=8192),
    _s("lr", "Learning rate", "float", "base (peak) learning rate", minimum=0, maximum=10),
    _s("optimizer", "Optimizer", "choice", choices=OPTIMIZERS),
    _s("momentum", "Momentum", "float", minimum=0, maximum=0.999),
    _s("nesterov", "Nesterov momentum", "switch"),
    _s("weight_decay", "Weight decay", "float", "never applied to biases and BatchNorm", minimum=0, maximum=0.1),
    _s("schedule", "Schedule", "choice", choices=SCHEDULES),
    _s("label_smoothing", "Label smoothing", "float", minimum=0, maximum=0.99),
    _s("batch_norm", "BatchNorm", "switch",
       "BatchNorm after every conv (default: the variant's own; a modern addition to the 2012 design)"),
    _s("whiten", "Whitened conv1", "switch",
       "start conv1 as a whitening of the training patches and keep it frozen (airbench's first layer)"),
    _s("warmup_epochs", "Warm-up epochs", "float",
       "epochs of rising learning rate (default: 30% of the run for onecycle, else none)", minimum=0,
       place="more"),
    _s("plateau_patience", "Plateau patience", "int",
       "plateau: epochs without a better validation accuracy before the rate falls tenfold", minimum=1,
       place="more"),
    _s("ema", "The weight average (ema)", "float",
       "decay of a moving average of the weights, which is validated and saved (0: off; 0.998 averages about "
       "the last 500 steps)", minimum=0, maximum=0.9999, place="more"),
    _s("pca_lighting", "PCA lighting", "float", "the paper's PCA colour augmentation strength (0.1 in the paper)",
       minimum=0, maximum=1, place="more"),
    _s("cutout", "Cutout", "int", "side in pixels of a square blanked out of each training image (0: off)",
       minimum=0, maximum=512, place="more"),
    _s("crop_pad", "Crop padding", "int", "small inputs (64 px or less): pixels of reflection around each training "
       "image before its random crop of the input's size (default: an eighth of the input, 4 at 32; 0: no shift)",
       minimum=0, maximum=16, place="more"),
    _s("flip", "Flip", "choice", "how training mirrors images: random: each image mirrored with probability 1/2; "
       "alternating: half mirrored once, then every image every other epoch (airbench)", choices=FLIPS,
       place="more"),
    _s("tta", "Validation test-time augmentation", "choice", "test-time augmentation when validating",
       choices=VALIDATION_TTA, place="more"),
    # How the data is split, and how the run is carried out: a recipe leaves these as they are.
    _s("input_size", "Input size", "int", "network input side in pixels (default: the variant's own)", minimum=8,
       place="more", recipe=False),
    _s("val_fraction", "Validation fraction", "float",
       "share of train held out for validation when there is no val/", minimum=0, maximum=0.5, place="more",
       recipe=False),
    _s("test_fraction", "Test fraction", "float", "share of train held out as the test split when there is no "
       "test/ (never trained on or used for selection)", minimum=0, maximum=0.5, place="more", recipe=False),
    _s("seed", "The seed", "int", minimum=0, place="more", recipe=False),
    _s("amp", "Mixed precision", "choice", "auto: where the device gains from it", choices=AMP_CHOICES,
       place="more", recipe=False),
    _s("channels_last", "Channels-last memory layout", "switch", place="more", recipe=False),
    _s("max_steps", "Max steps", "int",
       "end after this many steps (still validates and saves; default: no limit)", minimum=1,
       place="more", recipe=False),
    _s("time_limit", "Time limit (s)", "float",
       "end after this many seconds of training (still validates and saves; default: no limit); where the epochs "
       "would take longer, the learning-rate schedule is planned to end at the limit", minimum=1,
       place="more", recipe=False),
    _s("half", "Half-precision best checkpoint", "switch",
       "store best.safetensors in fp16 (loading gives fp32)", place="more", recipe=False),
    # Folders on the machine that trains: the command line's only (a page never names a server's folders).
    _s("out", "Run folder", "text", "run directory (default: runs/<model>-<data>-<time>)", place="cli",
       recipe=False),
    _s("resume", "Resume", "text", "a run directory to continue where it stopped", place="cli", recipe=False),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in TRAIN_SETTINGS}
# The settings a recipe sets: its own values, and the defaults for the ones it leaves out.
RECIPE_SETTINGS = tuple(setting.name for setting in TRAIN_SETTINGS if setting.recipe)


def recipe_config(recipe: str | None) -> TrainConfig:
    """What ``--recipe`` gives with no other flag: the recipe's values, defaults for the rest."""
    return TrainConfig(**RECIPES.get(recipe or "", {}))


def config_from_settings(settings: dict) -> tuple[TrainConfig, set[str]]:
    """The TrainConfig a settings object asks for, and the names it gave (the recipe's and its own: a resumed run
    takes every other setting from the run it continues). Numbers may come as floats (2.0), strings ("0.01")
    or None (a blank field: the default, where None is a value). A key that is no setting, an unknown recipe, or a value
    of the wrong type raises ConfigError with one sentence that names the setting; ranges are then checked by
    check_config, before any work."""
    if not isinstance(settings, dict):
        raise ConfigError("The settings must be an object of setting names and values, such as "
                          '{"model": "alexnet_cifar_small", "data": "cifar10", "epochs": 2}.')
    settings = dict(settings)
    recipe = settings.pop("recipe", None)
    if recipe in ("", "custom"):
        recipe = None
    if recipe is not None and recipe not in RECIPES:
        raise ConfigError(f"Unknown recipe {recipe!r}. Choose one of: {', '.join(RECIPES)}.")
    unknown = [name for name in settings if name not in SETTINGS_BY_NAME]
    if unknown:
        raise ConfigError(f"There is no setting {str(unknown[0])[:40]!r}. The settings are: recipe, "
                          f"{', '.join(SETTINGS_BY_NAME)}.")
    given = {name: _parsed(SETTINGS_BY_NAME[name], value) for name, value in settings.items()}
    if given.get("start_from") in ("", None):
        given.pop("start_from", None)
    decided = {}
    if given.get("start_from"):  # the start decides the model, its BatchNorm and input size, unless given
        from .transfer import start_settings

        decided = start_settings(given["start_from"])
    values = {**RECIPES.get(recipe or "", {}), **decided,
              **{name: value for name, value in given.items() if not (name in decided and value is None)}}
    return TrainConfig(**values), set(RECIPES.get(recipe or "", {})) | set(given)


def _parsed(setting: Setting, value):
    label = setting.label
    if setting.kind == "switch":
        if value is None and setting.optional:
            return None
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, not {value!r}.")
        return value
    if setting.kind not in ("int", "float"):
        return value  # check_config names what a choice or text may be
    if value is None or (isinstance(value, str) and not value.strip()):
        if setting.optional:
            return None
        raise ConfigError(f"{label} is empty: enter a {'whole ' if setting.kind == 'int' else ''}number.")
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if setting.kind == "int":
        if not (math.isfinite(number) and number.is_integer()):
            raise ConfigError(f"{label} must be a whole number, not {value!r}.")
        return int(number)
    if math.isnan(number):
        raise ConfigError(f"{label} must be a number, not {value!r}.")
    return number


def settings_of(config: TrainConfig) -> dict:
    """A config as a settings object: every setting of the table with its value."""
    return {setting.name: getattr(config, setting.name) for setting in TRAIN_SETTINGS}
