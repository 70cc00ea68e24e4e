"""How far ten-crop's corner crops should shift a small image: accuracy per padding, on the validation split.

    python -m bench.tta_shift --checkpoint checkpoints/cifar10.safetensors [--data ../shared/data/cifar10]
                              [--split val] [--pads 1 2 3 4] [--limit N] [--json]

A 32x32 image is stored at its input size, so ten-crop (transforms.tta_views) reflect-pads it and crops the
four corners and the centre, each also mirrored. This measures top-1 accuracy with no TTA, with flip, and
with ten-crop at each padding, each through evaluate.evaluate (the path of `evaluate --tta`). Choose on the
validation split (the default: the same seeded share of train the checkpoint was validated on), never on test.
transforms.small_image_pad holds the choice.
"""

from __future__ import annotations

import argparse
import json

from alexnet_core import checkpoints
from alexnet_core.evaluate import evaluate, load_for_evaluation
from alexnet_core.transforms import small_image_pad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", help="default: the data the checkpoint was trained on")
    parser.add_argument("--split", default="val")
    parser.add_argument("--pads", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--limit", type=int, help="at most this many images (a quick check)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    data = args.data or checkpoints.read_metadata(args.checkpoint)["data"]
    model, pre, split, _ = load_for_evaluation(args.checkpoint, data, args.split, limit=args.limit)
    modes = {"none": ("none", None), "flip": ("flip", None),
             **{f"ten-crop pad {p}": ("ten-crop", p) for p in args.pads}}
    results = {mode: evaluate(model, split, pre, tta=tta, pad=pad) for mode, (tta, pad) in modes.items()}
    n = results["none"].n
    report = {"checkpoint": args.checkpoint, "split": args.split, "n": n,
              "default_pad": small_image_pad(pre.input_size),
              "accuracy": {mode: round(r.accuracy, 4) for mode, r in results.items()}}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.checkpoint}, {args.split} split ({n} images); ten-crop pads by "
              f"{report['default_pad']} by default")
        for mode, acc in report["accuracy"].items():
            print(f"  {mode:<14} {acc:.2%}")

if __name__ == "__main__":
    main()
