"""The Train tab's form: one field per setting of the settings table (alexnet_core.train_settings), with its
label, bounds, help and default, and the conversions between a field's value and the setting's. The tab
(ui/train.py) lays the fields out and sends them as one settings object; a reload fills them from the visitor's
run.
"""

from __future__ import annotations

import gradio as gr

from alexnet_core.config import ConfigError
from alexnet_core.devices import available_devices
from alexnet_core.models import MODELS, get_spec
from alexnet_core.runner import LOCAL, RUNNER
from alexnet_core.train_settings import RECIPE_SETTINGS, TRAIN_SETTINGS, Setting, recipe_config
from alexnet_core.transfer import IMAGENET, start_settings

from .choices import OFF, ON, OWN, checkpoint_choices, data_choices, default_data, switch_choices, switch_value
from .visitors import owner_of

# The form's fields, in the order its events take them: every setting of the table a page may set (the run
# folders are the command line's only). The model's field is the first.
FORM_SETTINGS = tuple(setting for setting in TRAIN_SETTINGS if setting.place != "cli")


def own_label(model: str) -> str:
    """The first choice of the BatchNorm field: what the variant itself does."""
    return f"the model's own: {ON if model in MODELS and get_spec(model).batch_norm else OFF}"


def _to_form(setting: Setting, value):
    """A setting's value as its field shows it."""
    if setting.kind == "switch" and setting.optional:
        return OWN if value is None else ON if value else OFF
    return value


def _from_form(setting: Setting, value):
    """A field's value as the setting takes it: the three-way BatchNorm choice as None/True/False; a blank
    optional number, which the browser sends as 0, as None (where 0 is no value it may take)."""
    if setting.kind == "switch" and setting.optional:
        return switch_value(value)
    if setting.optional and setting.kind in ("int", "float") and value in (0, "") and (setting.minimum or 0) > 0:
        return None
    return value


def form_settings(recipe: str, *values) -> dict:
    """The settings object Start sends: the recipe and every field of the form, by name."""
    return {"recipe": recipe, **{setting.name: _from_form(setting, value)
                                for setting, value in zip(FORM_SETTINGS, values)}}


def recipe_values(recipe: str) -> list:
    """The form after a recipe is picked: every setting a recipe sets (RECIPE_SETTINGS) as ``--recipe`` sets it
    (its values, the defaults for the rest); what to train, on what, where and how long stay as they are."""
    config = recipe_config(recipe) if recipe != "custom" else None
    return [_to_form(setting, getattr(config, setting.name)) if config and setting.name in RECIPE_SETTINGS
            else gr.update() for setting in FORM_SETTINGS]


def form_of_run(owner: str) -> dict:
    """The form's values for ``owner``'s run, setting by setting, as it was started (a reload shows the settings
    of the run it follows); empty when they have none."""
    config = RUNNER.snapshot(owner).config
    return {setting.name: _to_form(setting, config[setting.name]) for setting in FORM_SETTINGS} if config else {}


def fill_form(visitor: str | None = None, request: gr.Request = None) -> list:
    """On page load: the form set to the visitor's run, if they have one (otherwise left as it is)."""
    owner = owner_of(visitor, request)
    values = form_of_run(owner)
    if not values:
        return [gr.skip() for _ in FORM_SETTINGS]
    return [gr.Dropdown(choices=data_choices(owner), value=values["data"]) if setting.name == "data"
            else values[setting.name] for setting in FORM_SETTINGS]


def zero_means(setting: Setting, model: str) -> str:
    """The help of an optional number's field, which shows its default as 0: "… (0: all)"; the input size's
    names the variant's own side."""
    own = f"the variant's own, {get_spec(model).input_size}" if model in MODELS else "the variant's own"
    return setting.help.replace("default: the variant's own", "default: " + own).replace("default: ", "0: ")


def field_for(setting: Setting, defaults) -> gr.components.Component:
    """The form's field for a setting of the table (its label, bounds, help and default)."""
    value = _to_form(setting, getattr(defaults, setting.name))
    info = setting.help or None
    if setting.name == "model":
        return gr.Dropdown(choices=[(f"{n} — {s.title}", n) for n, s in MODELS.items()], value=value,
                           label=setting.label, scale=2)
    if setting.name == "data":
        choices = data_choices()
        return gr.Dropdown(choices=choices, value=default_data(choices), label=setting.label, scale=2)
    if setting.name == "start_from":
        return gr.Dropdown(choices=start_choices(), value="", label=setting.label, info=info)
    if setting.name == "device":
        return gr.Dropdown(choices=["auto", *available_devices()], value=value, label=setting.label, scale=1)
    if setting.kind == "choice":
        return gr.Dropdown(choices=list(setting.choices), value=value, label=setting.label, info=info)
    if setting.kind == "switch" and setting.optional:
        return gr.Radio(choices=switch_choices(own_label(defaults.model)), value=value,
                        label=setting.label, info=info)
    if setting.kind == "switch":
        return gr.Checkbox(value=value, label=setting.label, info=info)
    if setting.optional and (setting.minimum or 0) <= 0:
        # The browser sends an empty number field as 0, which this setting takes as a value of its own (no
        # warm-up): a text field, whose blank stays blank (config_from_settings reads the number in it).
        return gr.Textbox(value=value, label=setting.label, info=info, placeholder="blank: the default")
    if setting.optional:  # the field shows an empty value as 0, and the browser sends it so (_from_form)
        info = zero_means(setting, defaults.model)
    bounds = {} if setting.optional else dict(minimum=setting.minimum, maximum=setting.maximum)
    return gr.Number(value=value, label=setting.label, info=info, precision=0 if setting.kind == "int" else None,
                     **bounds)


def start_choices(owner: str = LOCAL) -> list[tuple[str, str]]:
    """What a run may start from (transfer.py): random weights, the ImageNet AlexNet, the shipped checkpoints and
    the visitor's own runs."""
    return [("random weights (none)", ""), ("imagenet: torchvision's ImageNet AlexNet", IMAGENET),
            *checkpoint_choices(owner)]


def start_model(start: str | None, model: str):
    """The model field after a start is picked: the start's model (a start decides it)."""
    try:
        return start_settings(start)["model"] if start else gr.skip()
    except ConfigError:
        return gr.skip()
