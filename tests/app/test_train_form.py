"""The Train tab's form is the command line's config (issue 25, item 2): for every model and every recipe (and the
custom form at its defaults), the TrainConfig the page's Start builds equals, whole, the one
``python -m alexnet_core train --model M --recipe R …`` builds; every flag is a field of the page."""

import dataclasses

import gradio as gr
import pytest

import gradio_app
import ui.choices
import ui.settings
import ui.train
import ui.train_form
from alexnet_core.caps import TrainingCaps
from alexnet_core.cli import build_parser, train_config
from alexnet_core.config import RECIPES, TrainConfig
from alexnet_core.models import MODELS
from alexnet_core.train_settings import LIBRARY_ONLY, RECIPE_SETTINGS, SETTINGS_BY_NAME, TRAIN_SETTINGS


@pytest.fixture(scope="module")
def form():
    """The Train tab's recipe list and fields as a fresh page has them, by setting name."""
    app = gradio_app.build_app()
    by_id = {block.elem_id: block for block in app.blocks.values() if getattr(block, "elem_id", None)}
    fields = {s.name: by_id[f"train-{s.name.replace('_', '-')}"] for s in ui.train_form.FORM_SETTINGS}
    return by_id["train-recipe"], fields


@pytest.fixture
def started(monkeypatch, tmp_path):
    """The configs the page's Start hands to the runner (which then trains nothing)."""
    configs = []
    monkeypatch.setattr(ui.train.RUNNER, "start", lambda config, owner: configs.append(config))
    monkeypatch.setattr(ui.settings, "TRAINING_CAPS", TrainingCaps())
    monkeypatch.setattr(ui.settings, "VISITORS_DIR", tmp_path / "visitors")
    return configs


def page_config(form, started, model: str, recipe: str) -> TrainConfig:
    """Start on a fresh page after picking ``model`` and ``recipe``, as the page's events do it."""
    _, fields = form
    # As the browser sends them: an empty number field as 0 (measured with Gradio 6.31 and Chromium), an empty
    # text field as "".
    values = {name: field.value if field.value is not None else 0 if isinstance(field, gr.Number) else ""
              for name, field in fields.items()}
    for setting, update in zip(ui.train_form.FORM_SETTINGS, ui.train_form.recipe_values(recipe)):   # recipe.change
        if not isinstance(update, dict):                # gr.update(): the field stays as it is
            values[setting.name] = update
    values["model"] = model
    ui.train.start_training(ui.train_form.form_settings(recipe, *values.values()), visitor="v" * 32)
    return started[-1]


@pytest.mark.parametrize("recipe", ["custom", *RECIPES])
@pytest.mark.parametrize("model", list(MODELS))
def test_the_page_trains_what_the_command_line_trains(form, started, model, recipe):
    page = page_config(form, started, model, recipe)
    argv = ["--model", model, "--data", form[1]["data"].value, "--out", page.out]
    cli, _ = train_config(argv + (["--recipe", recipe] if recipe != "custom" else []))
    assert page == cli, {k: (v, getattr(cli, k)) for k, v in page.to_dict().items() if v != getattr(cli, k)}
    # the variant's own BatchNorm and input size, unless the recipe sets them, as the command line keeps them
    assert page.batch_norm == RECIPES.get(recipe, {}).get("batch_norm") and page.input_size is None


def test_every_flag_is_a_field_of_the_page_and_every_setting_a_flag(form):
    _, fields = form
    flags = {option for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions
             for option in action.option_strings if option.startswith("--")}
    table = {setting.flag for setting in TRAIN_SETTINGS}
    assert flags - {"--help", "--recipe"} == table | {f"--no-{f[2:]}" for f in table
                                                      if SETTINGS_BY_NAME[f[2:].replace("-", "_")].kind == "switch"}
    # Only the folders on the machine that trains are the command line's alone.
    assert set(SETTINGS_BY_NAME) - set(fields) == {"out", "resume"}
    assert {f.name for f in dataclasses.fields(TrainConfig)} == set(SETTINGS_BY_NAME) | set(LIBRARY_ONLY)
    for name, recipe in RECIPES.items():     # a recipe picked in the page sets every setting --recipe sets
        assert set(recipe) <= set(RECIPE_SETTINGS), name


def test_the_batchnorm_field_says_what_the_model_does_by_itself(form):
    _, fields = form
    assert fields["batch_norm"].value == ui.choices.OWN
    assert ui.train_form.own_label("alexnet_cifar_fast") == "the model's own: on"
    assert ui.train_form.own_label("alexnet") == "the model's own: off"


def test_architecture_counts_a_variant_with_its_own_batchnorm():
    import ui.architecture
    # alexnet_cifar_fast is made with BatchNorm: 6,977,994 parameters, 6,976,842 without (the tab started "off")
    assert "6,977,994 parameters" in ui.architecture.architecture("alexnet_cifar_fast", None)[-2]
    assert "6,976,842 parameters" in ui.architecture.architecture("alexnet_cifar_fast", None, ui.choices.OFF)[-2]
    heading = ui.architecture.compare("alexnet", "alexnet_cifar_fast")[2]
    assert "6,977,994 parameters" in heading, heading
