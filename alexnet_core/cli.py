"""The command line: ``python -m alexnet_core <command> …``.

Each command is one ``_add_<name>_parser(subparsers)`` that declares its flags and one
``_cmd_<name>(args) -> int`` that runs it; ``main`` wires them together. User errors (ValueError,
SizeError among them) print one sentence on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .models import MODELS, count_params, get_spec
from .summary import format_table, summarize, to_json

EXIT_USER_ERROR = 2  # the status argparse itself uses for bad arguments


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
    parser.add_argument("--batch-norm", action="store_true", help="add BatchNorm after every conv")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m alexnet_core", description="AlexNet Studio: inspect, train and use AlexNet variants."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_models_parser(subparsers)
    _add_summary_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
