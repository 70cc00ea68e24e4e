"""The Train tab in a real browser (issue 25, items 2 and 3): the run a visitor starts with a recipe is, whole, the
run the command line starts with the same choices (the browser's own way of sending fields included); the
download is named after the run and disabled until there is one; a reload shows the run's settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alexnet_core.cli import train_config
from alexnet_core.config import TrainConfig
from alexnet_core.runner import RUNNER
from tests.e2e.test_browser import _choose, _open, _tab, browser  # noqa: F401  (browser: a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_browser_starts_the_command_lines_run_and_names_its_download(browser, live_app):  # noqa: F811
    page = _open(browser, live_app.url)
    try:
        panel = _tab(page, "Train")
        batch_norm = panel.locator("#train-batch-norm")
        assert batch_norm.get_by_text("the model's own: off").count() == 1      # alexnet_cifar_small: none
        _choose(panel, "Model", re.compile("^alexnet_cifar_fast"))
        batch_norm.get_by_text("the model's own: on").wait_for()            # made with BatchNorm
        download = page.locator("#train-download")
        assert download.is_disabled()                                       # no checkpoint yet
        _choose(panel, "Recipe (sets the settings as --recipe does)", "paper")
        panel.get_by_text("More settings").click()
        page.wait_for_function("document.querySelector('#train-pca-lighting input').value === '0.1'")
        assert not panel.locator("#train-nesterov input").is_checked()
        _choose(panel, "Data", "Uploaded: tiny")
        panel.locator("#train-epochs input").fill("1")
        panel.locator("#train-batch-size input").fill("8")
        panel.locator("#train-batch-size input").press("Tab")
        before = set(RUNNER._runs)
        panel.get_by_role("button", name="Start", exact=True).click()
        page.get_by_text(re.compile(r"^Finished", re.M)).first.wait_for()

        owner = next(o for o in RUNNER._runs if o not in before)
        run = RUNNER.snapshot(owner)
        started = TrainConfig.from_dict(run.config)
        cli, _ = train_config(["--recipe", "paper", "--model", "alexnet_cifar_fast", "--data",
                               str(live_app.tiny_data), "--epochs", "1", "--batch-size", "8", "--out", started.out])
        assert started == cli, {k: (v, getattr(cli, k)) for k, v in run.config.items() if v != getattr(cli, k)}

        # The button follows its value in an event of its own (ui.train_view.download_button), a moment after the
        # status line says Finished: wait for it rather than look once.
        page.wait_for_function("!document.querySelector('#train-download').disabled")
        assert not download.is_disabled()
        with page.expect_download() as caught:
            download.click()
        assert caught.value.suggested_filename == f"{Path(run.run_dir).name}-best.safetensors"

        page.reload()
        page.get_by_text("Examples: click one").first.wait_for()
        panel = _tab(page, "Train")
        page.wait_for_function("document.querySelector('#train-epochs input').value === '1'")
        assert panel.locator("#train-batch-size input").input_value() == "8"
        assert "alexnet_cifar_fast" in panel.locator("#train-model input").input_value()
        assert "plateau" in panel.locator("#train-schedule input").input_value()
    finally:
        page.context.close()
