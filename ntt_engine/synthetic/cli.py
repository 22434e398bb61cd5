"""`python -m ntt_engine.synthetic OUT --images 100 --classes 5 --seed 0 [--difficulty hard]`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ntt_engine.synthetic.dataset import DIFFICULTIES, generate_dataset
from ntt_engine.synthetic.drawing import MAX_CLASSES
from ntt_engine.synthetic.hard import LOOK_ALIKE_HUE_SHIFT

DESCRIPTION = "A generated COCO instance-segmentation dataset for logic tests and demos."


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntt_engine.synthetic", description=DESCRIPTION)
    parser.add_argument("out", type=Path, help="output folder (images/ and instances.json)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--classes", type=int, default=5, help=f"1..{MAX_CLASSES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=_parse_size, default=(320, 240), help="WIDTHxHEIGHT (default 320x240)")
    parser.add_argument("--negative-fraction", type=float, default=0.15)
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default="easy",
                        help="hard: look-alike distractors, small objects, clutter (default easy)")
    parser.add_argument("--look-alike-shift", type=float, default=LOOK_ALIKE_HUE_SHIFT, metavar="DEGREES",
                        help="hard set: the look-alikes' hue shift from their class (default %(default)s; 0: the "
                             "class's exact hue, told apart by texture only)")
    args = parser.parse_args(argv)
    try:
        path = generate_dataset(args.out, args.images, args.classes, args.seed, args.size, args.negative_fraction,
                                progress=True, difficulty=args.difficulty,
                                look_alike_shift=args.look_alike_shift)
    except ValueError as exc:
        parser.error(str(exc))
    print(path)
    return 0
