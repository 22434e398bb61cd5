"""A generated COCO instance-segmentation dataset for logic tests and demos.

Each object class is a fixed (hue, texture) pair — e.g. "red_stripes", "green_checker" — drawn as ellipses,
rotated rectangles or star-shaped blobs with small per-instance jitter (hue, saturation, brightness, texture period,
orientation and phase). Several instances per image occlude each other: later objects are drawn over earlier ones and
the ground-truth masks are the *visible* parts. The background is a low-saturation textured gradient. About
`negative_fraction` of the images contain no class object at all, only "distractor" objects whose hues are not used by
any class.

Rendering is crisp (no anti-aliasing), every object's pixels share one hue (its texture alternates a bright and a
dark shade of that hue), and two instances of the same class never touch, so each instance is a well defined region.
Placements that would hide more than ~70 % of an earlier class instance (or leave it under 64 px) are rejected, so
every class object visible in an image has an annotation.

    python -m ntt_engine.synthetic OUT --images 100 --classes 5 --seed 0

writes `OUT/images/000001.png …` and `OUT/instances.json` (COCO; `file_name` is relative to `OUT/images`, which is
also recorded as `info.image_root`). Each annotation also carries `drawn_area`, the pixel count of the whole shape
inside the image before occlusion (`area` < `drawn_area` means occluded). Deterministic for a given seed and
arguments. `--difficulty hard` adds look-alikes, small objects and clutter (hard.py).

Modules: drawing.py (appearances, shapes, placement, painting), easy.py and hard.py (what one image holds),
dataset.py (the images and instances.json on disk), cli.py (the command line).
"""
from ntt_engine.synthetic.cli import main
from ntt_engine.synthetic.dataset import DIFFICULTIES, generate_dataset, mask_to_annotation
from ntt_engine.synthetic.drawing import (CLASS_APPEARANCES, DISTRACTOR_APPEARANCES, MAX_CLASSES, Appearance,
                                          class_appearances)

__all__ = ["CLASS_APPEARANCES", "DIFFICULTIES", "DISTRACTOR_APPEARANCES", "MAX_CLASSES", "Appearance",
           "class_appearances", "generate_dataset", "main", "mask_to_annotation"]
