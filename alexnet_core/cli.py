"""The command line: ``python -m alexnet_core <command> …``.

Each command is one ``_add_<name>_parser(subparsers)`` that declares its flags and one
``_cmd_<name>(args) -> int`` that runs it; ``main`` wires them together. User errors (ValueError,
SizeError among them) print one sentence on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .models import MODELS, count_params, get_spec
from .summary import format_table, summarize, to_json

if TYPE_CHECKING:
    from .config import TrainConfig

EXIT_USER_ERROR = 2  # the status argparse itself uses for bad arguments


def check_out_folder(out: str) -> None:
    """ValueError with one sentence, before any work, when --out cannot be a folder this command writes to: an
    existing file, a path under a file, or a place the user may not write. Creates nothing."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: name a folder (it is created if needed).")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out} cannot be created: {parent} is a file, not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} cannot be {'written to' if parent == path else 'created'}: you may not "
                         f"write in {parent}.")


def _add_models_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the AlexNet variants")
    parser.set_defaults(run=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    rows = [["name", "input", "params", "title"]]
    for name, spec in MODELS.items():
        with torch.device("meta"):  # shapes only: counting parameters needs no memory
            params = count_params(spec.build())
        size = f"{spec.in_channels}x{spec.input_size}x{spec.input_size}"
        rows.append([name, size, f"{params:,}", spec.title])
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")
    return 0


def _add_summary_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summary", help="layer-by-layer shapes, parameters, MACs and receptive fields of a variant"
    )
    parser.add_argument("--model", required=True, choices=list(MODELS), metavar="NAME",
                        help=f"the variant: {', '.join(MODELS)}")
    parser.add_argument("--input-size", type=int, metavar="N",
                        help="input side in pixels (default: the variant's own)")
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                        help="BatchNorm after every conv (default: the variant's own)")
    parser.add_argument("--num-classes", type=int, metavar="K", help="default: the variant's own")
    parser.add_argument("--in-channels", type=int, metavar="C", help="default: the variant's own")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=_cmd_summary)


def _cmd_summary(args: argparse.Namespace) -> int:
    spec = get_spec(args.model)
    summary = summarize(
        args.model, spec.input_size if args.input_size is None else args.input_size, batch_norm=args.batch_norm,
        num_classes=args.num_classes, in_channels=args.in_channels,
    )
    print(json.dumps(to_json(summary), indent=2) if args.json else format_table(summary))
    return 0


# ---- train -----------------------------------------------------------------------------------------------

def _add_train_parser(sub) -> None:
    from .config import RECIPES
    from .train_settings import TRAIN_SETTINGS

    p = sub.add_parser("train", help="train a variant; writes best.safetensors and a resumable last.safetensors",
                       description="Train a variant. Settings left out come from --recipe, then from the defaults "
                                   "(the paper's SGD with a OneCycle schedule).")
    p.add_argument("--recipe", choices=list(RECIPES), help="a preset: the paper's, a tutorial's or the Studio's")
    # One flag per setting of the table the Train tab's form is made from (train_settings.py). Every default is
    # None: a flag left out takes the recipe's value, then TrainConfig's.
    for setting in TRAIN_SETTINGS:
        help = setting.help.replace("%", "%%") or None   # argparse formats help with %
        if setting.kind == "switch":
            p.add_argument(setting.flag, action=argparse.BooleanOptionalAction, default=None,
                           help=help)
        elif setting.kind == "choice":
            p.add_argument(setting.flag, choices=setting.choices, help=help,
                           metavar="NAME" if setting.name == "model" else None)
        else:
            p.add_argument(setting.flag, type={"int": int, "float": float}.get(setting.kind, str),
                           help=help)
    p.set_defaults(run=_cmd_train)


def train_config(argv: list[str]) -> tuple[TrainConfig, set[str]]:
    """The config ``python -m alexnet_core train ARGV…`` trains, without training (tests compare it with the
    Train tab's)."""
    return _train_config(build_parser().parse_args(["train", *argv]))


def _train_config(args) -> tuple[TrainConfig, set[str]]:
    """The config the flags ask for, and the settings given (typed flags and the recipe's): a resumed run
    takes every other setting from the run it continues."""
    from .train_settings import SETTINGS_BY_NAME, config_from_settings

    given = {name: value for name, value in vars(args).items() if name in SETTINGS_BY_NAME and value is not None}
    return config_from_settings({"recipe": args.recipe, **given})


def _cmd_train(args) -> int:
    import signal
    import threading

    from tqdm import tqdm

    from .events import EndEvent, EpochEvent, StartEvent, StepEvent
    from .train import train

    cfg, given = _train_config(args)
    if not cfg.resume and (not (args.model or args.start_from) or not args.data):
        raise ValueError("train needs --model (or --start-from) and --data (or --resume DIR).")
    if args.out:
        check_out_folder(args.out)
    stop = threading.Event()

    def on_sigint(signum, frame):  # first Ctrl-C: stop cleanly and save; second: the usual interrupt
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, on_sigint)
    bar = None

    def on_event(event) -> None:
        nonlocal bar
        if isinstance(event, StartEvent):
            tqdm.write(f"run {event.run_dir} on {event.device}: {event.train_images:,} training and "
                       f"{event.val_images:,} validation images, {event.total_steps:,} steps")
            if event.resumed:
                tqdm.write(event.resumed)
            bar = tqdm(total=event.total_steps, unit="step", dynamic_ncols=True)
        elif isinstance(event, StepEvent):
            bar.n = event.step
            bar.set_postfix(epoch=f"{event.epoch}/{event.epochs}", loss=f"{event.loss:.3f}",
                            lr=f"{event.lr:.3g}", img_s=f"{event.images_per_s:.0f}", refresh=False)
            bar.refresh()
        elif isinstance(event, EpochEvent):
            tqdm.write(f"epoch {event.epoch}/{event.epochs}  train loss {event.train_loss:.3f} "
                       f"acc {event.train_acc:.1%}  val loss {event.val_loss:.3f} acc {event.val_acc:.1%}  "
                       f"{event.seconds:.0f} s{'  *best' if event.best else ''}")
        elif isinstance(event, EndEvent):
            if bar is not None:
                bar.close()
            tqdm.write(event.message)
            if event.best_path:
                tqdm.write(f"best: {event.best_path} (val acc {event.best_val_acc:.1%}), "
                           f"{event.wall_time_s:.0f} s of training")

    command = "python -m alexnet_core " + shlex.join(sys.argv[1:])
    # A bad setting raises ValueError before any work: main reports it.
    end = train(cfg, on_event, stop, command, given=given)
    return 1 if end.status == "failed" else 0


# ---- evaluate --------------------------------------------------------------------------------------------

def _add_evaluate_parser(sub) -> None:
    from .transforms import TTA_CHOICES

    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True,
                   help="cifar10, fashion-mnist, flowers, or an ImageFolder directory; a folder of your own "
                        "labelled photos (DIR/test/<class>/, DIR/val/<class>/ or DIR/<class>/) is measured whole")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--tta", choices=TTA_CHOICES, default="none",
                   help="test-time augmentation: the image, + its mirror image, or the paper's ten crops")
    p.add_argument("--limit", type=int, help="at most this many images per split")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from .devices import resolve_device
    from .evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.data, args.split, tta=args.tta, limit=args.limit,
                                 device=str(resolve_device(args.device)))
    report = result.to_json()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"accuracy {report['accuracy']:.2%} on {report['n']:,} images ({report['measured']})")
    width = max(len(c) for c in result.classes)
    for name, acc in report["per_class"].items():
        print(f"  {name:<{width}}  {acc:7.2%}")
    print("confusion (rows: true class, columns: predicted):")
    for name, row in zip(result.classes, report["confusion"]):
        print(f"  {name:<{width}}  " + " ".join(f"{v:5d}" for v in row))
    return 0


# ---- predict ---------------------------------------------------------------------------------------------

def _add_predict_parser(sub) -> None:
    from .transforms import TTA_CHOICES

    p = sub.add_parser("predict", help="the top classes of one or more images, by a checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint (a run's best.safetensors)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="how many classes to show (default 5)")
    p.add_argument("--tta", choices=TTA_CHOICES, default="none",
                   help="test-time augmentation: the image and its mirror (flip), or the paper's ten crops")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list of {"image", "top": [{"class", "probability"}], "seconds"}')
    p.set_defaults(run=_cmd_predict)


def _cmd_predict(args) -> int:
    from .devices import resolve_device
    from .predict import get_predictor

    predictor = get_predictor(args.checkpoint, device=str(resolve_device(args.device)))
    results = []
    for image in args.images:
        prediction = predictor.predict(image, top_k=args.top_k, tta=args.tta)
        if args.json:  # the key stays "top": scripts read this JSON
            results.append({"image": image,
                            "top": [{"class": name, "probability": p} for name, p in prediction.top_k],
                            "seconds": prediction.seconds})
        else:
            print(f"{image}: " + " · ".join(f"{name} {p:.1%}" for name, p in prediction.top_k)
                  + f"  ({1000 * prediction.seconds:.1f} ms)")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


# ---- explain ---------------------------------------------------------------------------------------------

def _add_explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="what each conv layer sees, conv1's filters and Grad-CAM for one image",
                       description="Writes activations_<layer>.png for each conv layer, filters_conv1.png and "
                                   "gradcam.png into --out, and prints the top classes.")
    p.add_argument("image", metavar="IMAGE", help="an image file (any format Pillow reads)")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a .safetensors checkpoint (a run's best.safetensors)")
    model.add_argument("--model", choices=list(MODELS), metavar="NAME",
                       help=f"an untrained variant (random weights) instead: {', '.join(MODELS)}")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files (created if needed)")
    p.add_argument("--target-class", metavar="NAME_OR_INDEX",
                   help="the class Grad-CAM explains (default: the predicted class)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="how many classes to show (default 5)")
    p.set_defaults(run=_cmd_explain)


def _cmd_explain(args) -> int:
    from .checkpoints import load_model
    from .explain import explain, untrained_variant, write_explanation

    check_out_folder(args.out)
    model, meta = load_model(args.checkpoint) if args.checkpoint else untrained_variant(args.model)
    result = explain(model, meta, args.image, target_class=args.target_class, top_k=args.top_k)
    for path in write_explanation(result, args.out):
        print(path)
    print(" · ".join(f"{name} {p:.1%}" for name, p in result.top_k))
    print(f"Grad-CAM explains: {result.target_name}")
    return 0


# ---- card ------------------------------------------------------------------------------------------------

def _add_card_parser(sub) -> None:
    p = sub.add_parser("card", help="evaluate a checkpoint on its test split and write a Markdown model card",
                       description="Writes <name>.md and <name>_confusion.png into --out: the checkpoint's "
                                   "training record from its metadata, and its accuracy on --split.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="default: the data it was trained on")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=_cmd_card)


def _cmd_card(args) -> int:
    from .cards import model_card
    from .checkpoints import atomic_write_bytes, read_metadata
    from .devices import resolve_device
    from .evaluate import evaluate, load_for_evaluation
    from .plots import confusion_plot
    from .transforms import TTA_CHOICES

    check_out_folder(args.out)   # before evaluating thousands of images
    data = args.data or read_metadata(args.checkpoint).get("data")
    if not isinstance(data, str) or not data:
        raise ValueError(
            f"{Path(args.checkpoint).name} does not record the data it was trained on: name it with --data.")
    device = str(resolve_device(args.device))
    # The batch that fits ten-crop, the most views (or one sentence before any image is decoded).
    model, pre, split, batch = load_for_evaluation(args.checkpoint, data, args.split, device=device, tta="ten-crop")
    results = {tta: evaluate(model, split, pre, device=device, tta=tta, batch_size=batch) for tta in TTA_CHOICES}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.checkpoint).stem
    confusion_plot(results["none"]).savefig(out / f"{name}_confusion.png", dpi=100)
    card = model_card(args.checkpoint, results, args.split, f"{name}_confusion.png")
    # Atomic: the app reads a shipped card's test accuracy for its checkpoint labels, maybe while this writes.
    atomic_write_bytes(out / f"{name}.md", card.encode("utf-8"))
    print(card)
    return 0


# ---- compare and snapshots -------------------------------------------------------------------------------------

def _add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="runs side by side: best accuracies, the settings that differ, one chart",
                       description="Reads each checkpoint's recorded history and settings (headers only).")
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    p.add_argument("--x", choices=("epoch", "time"), default="epoch", help="the chart's x axis (default: epoch)")
    p.add_argument("--out", metavar="PNG", help="write the chart of validation accuracy and loss here")
    p.set_defaults(run=_cmd_compare)


def _cmd_compare(args) -> int:
    from .compare import comparison_plot, record_of, table

    records = [record_of(path) for path in args.checkpoints]
    headers, rows = table(records)
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(f"{str(cell):<{width}}" for cell, width in zip(row, widths)).rstrip())
    if args.out:
        comparison_plot(records, args.x).savefig(args.out, dpi=100)
    return 0


def _add_snapshots_parser(sub) -> None:
    p = sub.add_parser("snapshots", help="a run's snapshots: conv1's filters, guesses and accuracy over time",
                       description="Lists the snapshots train wrote into RUN/snapshots and can write the filters' "
                                   "timeline as an animated GIF.")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--gif", metavar="FILE", help="write conv1's filters at every snapshot as an animated GIF")
    p.set_defaults(run=_cmd_snapshots)


def _cmd_snapshots(args) -> int:
    from pathlib import Path

    from . import snapshots
    from .checkpoints import atomic_write_bytes

    taken = snapshots.load_all(args.run_dir)
    if not taken:
        raise ValueError(f"{Path(args.run_dir).name} has no snapshots (train writes them into RUN/snapshots).")
    for snapshot in taken:
        accuracy = f"  val acc {snapshot.val_acc:.1%}" if snapshot.val_acc is not None else ""
        print(f"{snapshot.index:4d}  {snapshot.label()}{accuracy}")
    if args.gif:
        atomic_write_bytes(args.gif, snapshots.filters_animation(args.run_dir))
        print(f"wrote {args.gif} ({len(taken)} frames)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m alexnet_core", description="AlexNet Studio: inspect, train and use AlexNet variants."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_models_parser(subparsers)
    _add_summary_parser(subparsers)
    _add_train_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_predict_parser(subparsers)
    _add_explain_parser(subparsers)
    _add_card_parser(subparsers)
    _add_compare_parser(subparsers)
    _add_snapshots_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:   # a file or folder the system refuses (one the checks above could not foresee)
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {error.strerror or error}{where}.", file=sys.stderr)
        return EXIT_USER_ERROR
