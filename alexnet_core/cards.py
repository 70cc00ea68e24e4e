"""Model cards: what a checkpoint is, how it was trained and how well it does, in Markdown.

``python -m alexnet_core card --checkpoint PATH --data SOURCE --out DIR`` evaluates the checkpoint on its test
split and writes ``<name>.md`` and ``<name>_confusion.png`` into DIR. Every number on the card comes from the
checkpoint's own metadata (written by the training run) or from that evaluation. The card is in the Hugging
Face Hub's format (huggingface_hub.ModelCard, which gradio installs): YAML metadata, then the Markdown.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import checkpoints
from .checkpoints import is_finite_number
from .evaluate import EvalResult
from .models import count_params, get_spec
from .transfer import describe_provenance

# The per-epoch record a card prints; a record without every one of these as a finite number is left out.
HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "wall_time_s")


def readable_history(meta: dict) -> tuple[list[dict], int]:
    """The per-epoch records a card can print, and how many others it leaves out. The history is the
    checkpoint's own word, read from its header: a damaged or forged entry must not stop the card."""
    history = meta.get("history")
    if history is None:
        return [], 0
    if not isinstance(history, list):
        return [], 1
    kept = [h for h in history if isinstance(h, dict) and all(is_finite_number(h.get(key)) for key in HISTORY_FIELDS)]
    return kept, len(history) - len(kept)


def _number(value, text: str = "{:.2%}") -> str:
    """A recorded number as the card prints it, or "?" where the record holds something else."""
    return text.format(value) if is_finite_number(value) else "?"


def first_time_above(history: list[dict], threshold: float) -> tuple[int, float] | None:
    """(epoch, training wall time in s) at which validation accuracy first reached ``threshold``, or None."""
    for record in history:
        if record["val_acc"] >= threshold:
            return record["epoch"], record["wall_time_s"]
    return None


def _splits_text(config: dict) -> str:
    """Which images validated (picked the best epoch) and which tested, as this run's data had them."""
    folder = Path(str(config.get("data") or ""))
    has = lambda name: folder.is_dir() and (folder / name).is_dir()  # noqa: E731
    val = ("validation (picks the best epoch): the data's val/ folder" if has("val") else
           f"validation (picks the best epoch): a seeded {_number(config.get('val_fraction', 0.1), '{:.0%}')} "
           f"of train")
    test = (f"test: a seeded {_number(config['test_fraction'], '{:.0%}')} of train held out"
            if config.get("test_fraction") else "test: the data's test/ folder")
    return f"{val}; {test}, never trained on or used to pick"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if is_finite_number(seconds) else "? min"


def model_card(path: str | Path, results: dict[str, EvalResult], split: str, confusion_png: str) -> str:
    """The Markdown card for the checkpoint at ``path``, evaluated on ``split``: ``results`` maps each
    test-time augmentation (``none`` first, the per-class figures' source) to its evaluation."""
    plain = results["none"]
    path = Path(path)
    meta = checkpoints.read_metadata(path)
    config = meta["config"] if isinstance(meta.get("config"), dict) else {}
    history, left_out = readable_history(meta)
    versions = meta["versions"] if isinstance(meta.get("versions"), dict) else {}
    command = meta.get("command") if isinstance(meta.get("command"), str) else None
    resumed = [c for c in meta.get("resume_commands") or [] if isinstance(c, str)] \
        if isinstance(meta.get("resume_commands"), list) else []
    model, _ = checkpoints.load_model(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = get_spec(meta["model"])
    pre = meta["preprocess"]

    lines = [
        f"## {path.name}",
        "",
        f"**{meta['model']}** ({spec.title}{', BatchNorm' if meta['batch_norm'] else ''}), "
        f"{count_params(model):,} parameters, input {pre['in_channels']}x{pre['input_size']}x{pre['input_size']}, "
        f"{meta['num_classes']} classes: {', '.join(meta['classes'])}.",
        "",
        f"- File: `{path.name}`, {path.stat().st_size / 2**20:.1f} MiB, sha256 `{digest[:16]}…`",
        f"- Data: `{meta.get('data')}` ({meta.get('data_description', '')}); {_splits_text(config)}",
        f"- Started from: {describe_provenance(meta.get('started_from'))}",
        f"- **Top-1 on the {split} split ({plain.n:,} images): {plain.accuracy:.2%}**" + "".join(
            f"; with {tta} test-time augmentation {result.accuracy:.2%}"
            for tta, result in results.items() if tta != "none"),
        f"- Best validation accuracy {_number(meta.get('best_val_acc'))} at epoch {meta.get('best_epoch')} of "
        f"{meta.get('epochs')}; training wall time {_minutes(meta.get('wall_time_s', 0))}",
    ]
    for threshold in (0.85, 0.90, 0.93):
        reached = first_time_above(history, threshold)
        lines.append(f"- Validation accuracy first ≥ {threshold:.0%}: " + (
            f"epoch {reached[0]}, after {_minutes(reached[1])} of training" if reached else "never in this run"))
    lines += [
        f"- Machine: {meta.get('machine', '?')}; device {meta.get('device', '?')}; mixed precision "
        f"{meta.get('mixed_precision') or config.get('amp', '?')}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        "",
        "Command:",
        "",
        "```bash",
        command or "(not recorded: trained through the API or the app)",
        *(f"# then resumed (the training time adds up):\n{c}" for c in resumed),
        "```",
        "",
        f"Per-class accuracy on the {split} split: " + ", ".join(
            f"{name} {acc:.1%}" for name, acc in plain.per_class().items()) + ".",
        "",
        f"![Confusion matrix on the {split} split]({confusion_png})",
        "",
        "<details><summary>Per-epoch metrics</summary>",
        "",
        "| epoch | train loss | train acc | val loss | val acc | lr | wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {h['epoch']} | {h['train_loss']:.3f} | {h['train_acc']:.1%} | {h['val_loss']:.3f} | "
          f"{h['val_acc']:.1%} | {h['lr']:.3g} | {_minutes(h['wall_time_s'])} |" for h in history],
        *([f"\n{left_out} recorded epoch(s) left out: not a record of numbers."] if left_out else []),
        "",
        "</details>",
        "",
    ]
    return _hub_card(meta, path, plain.accuracy, split, "\n".join(lines))


def _hub_card(meta: dict, path: Path, accuracy: float, split: str, body: str) -> str:
    """The card as the Hub reads it: its metadata (task, library, data set, the test accuracy) as YAML."""
    from huggingface_hub import EvalResult as HubEvalResult
    from huggingface_hub import ModelCard, ModelCardData

    data = Path(str(meta.get("data") or "unknown")).name
    card_data = ModelCardData(
        model_name=path.stem, library_name="pytorch", pipeline_tag="image-classification",
        tags=["alexnet", "alexnet-studio", meta["model"]], metrics=["accuracy"],
        eval_results=[HubEvalResult(task_type="image-classification", dataset_type=data, dataset_name=data,
                                    dataset_split=split, metric_type="accuracy", metric_value=round(accuracy, 4))])
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}"))
