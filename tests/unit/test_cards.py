"""Model cards (`python -m alexnet_core card`): every number on the card is the checkpoint's own record or
a fresh evaluation of it, and a resumed run's card gives every command that trained it."""

import re
import threading
from pathlib import Path

import pytest

from alexnet_core import checkpoints
from alexnet_core.checkpoints import list_checkpoints
from alexnet_core.cli import main
from alexnet_core.config import TrainConfig
from alexnet_core.evaluate import evaluate_checkpoint
from alexnet_core.events import EpochEvent
from alexnet_core.train import train
from tests.helpers import assert_one_sentence, make_image_folder

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints"


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory) -> Path:
    """A tiny run stopped after its first epoch, then resumed to its end: returns best.safetensors."""
    root = tmp_path_factory.mktemp("card")
    folder = make_image_folder(root / "data", ["red", "green", "blue"], n_per_class=16, size=32,
                               splits=("train", "val", "test"))
    stop = threading.Event()
    cfg = TrainConfig(model="alexnet_cifar_small", data=str(folder), epochs=2, batch_size=16, lr=0.02,
                      device="cpu", out=str(root / "run"), half=False)
    train(cfg, lambda e: stop.set() if isinstance(e, EpochEvent) else None, stop, command="first command")
    end = train(TrainConfig(resume=str(root / "run"), epochs=2, device="cpu"), command="resume command")
    assert end.status == "finished", end.message
    return Path(end.best_path)


def test_the_card_reports_each_tta_and_both_commands(resumed_run, tmp_path, capsys):
    assert main(["card", "--checkpoint", str(resumed_run), "--out", str(tmp_path)]) == 0
    card = (tmp_path / "best.md").read_text()
    assert (tmp_path / "best_confusion.png").stat().st_size > 1000
    assert card.strip() in capsys.readouterr().out                         # printed as well as written

    data = checkpoints.read_metadata(resumed_run)["data"]
    for tta in ("none", "flip", "ten-crop"):
        accuracy = evaluate_checkpoint(resumed_run, data, "test", tta=tta).accuracy
        label = "**Top-1 on the test split (48 images): " if tta == "none" else f"with {tta} test-time augmentation "
        assert f"{label}{accuracy:.2%}" in card
    assert "first command\n# then resumed (the training time adds up):\nresume command" in card
    assert "![Confusion matrix on the test split](best_confusion.png)" in card


@pytest.mark.parametrize("name", ["cifar10", "flowers"])
def test_a_shipped_card_is_in_the_hubs_format_and_gives_its_checkpoints_label(name):
    """The card the card command wrote for a shipped checkpoint: its YAML is what the Hub reads, and the
    app's label shows the same test top-1 as the card's Markdown and its YAML."""
    from huggingface_hub import ModelCard

    checkpoint = SHIPPED_DIR / f"{name}.safetensors"
    meta = checkpoints.read_metadata(checkpoint)
    card = ModelCard.load(SHIPPED_DIR / "cards" / f"{name}.md")   # raises if its model-index is malformed
    assert card.data.library_name == "pytorch" and card.data.pipeline_tag == "image-classification"
    assert {"alexnet", "alexnet-studio", meta["model"]} <= set(card.data.tags)
    assert card.data.metrics == ["accuracy"] and card.data.model_name == name
    (result,) = card.data.eval_results
    data = Path(meta["data"]).name
    assert (result.task_type, result.dataset_name, result.dataset_split, result.metric_type) == (
        "image-classification", data, "test", "accuracy")

    markdown = re.search(r"\*\*Top-1 on the test split \([\d,]+ images\): ([\d.]+)%\*\*", card.text)
    assert markdown, f"{name}.md has no plain test top-1 line"
    assert float(markdown.group(1)) == pytest.approx(100 * result.metric_value)
    label = list_checkpoints(checkpoint)[0].name
    shown = re.fullmatch(r".+ · ([\d.]+)% test", label)
    assert shown and float(shown.group(1)) == float(markdown.group(1)), label


def test_a_card_leaves_out_what_a_forged_history_holds_instead_of_crashing(resumed_run, tmp_path):
    """The metadata is the checkpoint's own word: entries that are not records of numbers, and fields of the
    wrong type, are left out or shown as "?", and the card is still written from the rest."""
    from safetensors.torch import load_file

    from alexnet_core.cards import model_card

    meta = checkpoints.read_metadata(resumed_run)
    good = meta["history"]
    assert good, "the run recorded no epoch"
    forged = dict(meta, history=[*good, "not a record", {"epoch": 9, "val_acc": "high"}, {"epoch": float("inf")}],
                  best_val_acc="best", wall_time_s=None, versions=["torch"], resume_commands="rm -rf /",
                  config=dict(meta["config"], val_fraction="a tenth", test_fraction="a tenth"))
    path = tmp_path / "forged.safetensors"
    checkpoints.save_checkpoint(path, load_file(resumed_run), forged)
    results = {"none": evaluate_checkpoint(resumed_run, meta["data"], "test")}
    # Evaluating the forged file itself is refused: its recorded split cannot be carved again.
    with pytest.raises(ValueError) as refused:
        evaluate_checkpoint(path, meta["data"], "test")
    assert_one_sentence(str(refused.value), "val_fraction")

    card = model_card(path, results, "test", "forged_confusion.png")
    assert "3 recorded epoch(s) left out: not a record of numbers." in card
    assert "Best validation accuracy ? at epoch" in card and "training wall time ? min" in card
    assert "rm -rf" not in card and "test: a seeded ? of train held out" in card
    rows = [line for line in card.splitlines() if re.match(r"\| \d+ \| [\d.]+ \|", line)]
    assert len(rows) == len(good)                       # every real epoch is still in the table
