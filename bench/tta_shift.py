"""How far ten-crop's corner crops should shift a small image: accuracy per padding, on the validation split.

    python bench/tta_shift.py --checkpoint checkpoints/cifar10.safetensors [--data ../shared/data/cifar10]
                              [--split val] [--pads 1 2 3 4] [--limit N] [--json]

A 32x32 image is stored at its input size, so ten-crop (predict.tta_views) reflect-pads it and crops the
four corners and the centre, each also mirrored. This measures top-1 accuracy with no TTA, with flip, and
with ten-crop at each padding, in one pass over the split. Choose on the validation split (the default: the
same seeded share of train the checkpoint was validated on), never on test. predict.small_image_pad holds
the choice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_core import checkpoints, data  # noqa: E402
from alexnet_core.evaluate import _probabilities, load_for_evaluation  # noqa: E402
from alexnet_core.predict import small_image_pad, tta_views  # noqa: E402


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", help="default: the data the checkpoint was trained on")
    parser.add_argument("--split", default="val")
    parser.add_argument("--pads", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--limit", type=int, help="at most this many images (a quick check)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    source = args.data or checkpoints.read_metadata(args.checkpoint)["data"]
    model, pre, split = load_for_evaluation(args.checkpoint, source, args.split, limit=args.limit)
    model.eval()
    modes = {"none": None, "flip": None, **{f"ten-crop pad {p}": p for p in args.pads}}
    correct = dict.fromkeys(modes, 0)
    n = 0
    for images, labels in split.batches(250, shuffle=False, generator=None, drop_last=False):
        for mode, pad in modes.items():
            if pad is None:
                x = data.eval_transform(images, pre)
                probs = _probabilities(model, x.contiguous(memory_format=torch.channels_last), mode)
            else:
                x = torch.cat([tta_views(image, pre, "ten-crop", pad=pad) for image in images])
                probs = _probabilities(model, x.contiguous(memory_format=torch.channels_last), "ten-crop")
            correct[mode] += (probs.argmax(1) == labels).sum().item()
        n += len(labels)
    result = {"checkpoint": args.checkpoint, "split": args.split, "n": n,
              "default_pad": small_image_pad(pre.input_size),
              "accuracy": {mode: round(c / max(n, 1), 4) for mode, c in correct.items()}}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.checkpoint}, {args.split} split ({n} images); ten-crop pads by "
              f"{result['default_pad']} by default")
        for mode, acc in result["accuracy"].items():
            print(f"  {mode:<14} {acc:.2%}")


if __name__ == "__main__":
    main()
