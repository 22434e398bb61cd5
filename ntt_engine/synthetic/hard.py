"""The "hard" difficulty of `ntt_engine.synthetic`: what makes a few-shot labeller need corrections.

On top of the easy set's rules (occlusion, visible-part masks, every visible class object annotated):
- look-alikes: every class has a distractor class of its colour (hue shifted by `LOOK_ALIKE_HUE_SHIFT` by default,
  less than the ±3° per-instance jitter spread twice over: red vs a slightly warmer red; `look_alike_shift` of
  `generate_dataset` picks another, 0 for the class's exact hue) with another texture (`LOOK_ALIKE_TEXTURE`);
  1-3 per image, on negatives too. A class prototype scores them well above 0.5, so a
  few-shot model predicts them until it learns otherwise. (With the exact hue, the shipped test encoder cannot tell
  them apart: its texture channels move a vector less than per-instance jitter does.) Two objects of one hue never
  touch (each stays its own region);
- small objects: ~40 % of class instances (and look-alikes) are drawn at a third of the usual size;
- clutter: 2-5 small objects of the unused hues.

    python -m ntt_engine.synthetic OUT --images 60 --classes 3 --difficulty hard
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ntt_engine.synthetic.drawing import Appearance, draw

LOOK_ALIKE_TEXTURE = {"stripes": "waves", "waves": "stripes", "checker": "diagonal", "diagonal": "checker",
                      "dots": "rings", "rings": "dots", "solid": "stripes", "grid": "checker"}
LOOK_ALIKE_HUE_SHIFT = 8.0  # degrees
NORMAL_SIZE = (0.08, 0.18)  # radius as a fraction of the image's shorter side
SMALL_SIZE = (0.035, 0.06)
SMALL_FRACTION = 0.4


def look_alike(look: Appearance, hue_shift: float = LOOK_ALIKE_HUE_SHIFT) -> Appearance:
    """The distractor class that shares `look`'s hue, `hue_shift` degrees off (0: the class's exact hue)."""
    return Appearance(look.colour, (look.hue + hue_shift) % 360.0, LOOK_ALIKE_TEXTURE[look.texture])


def render_hard_image(rng: np.random.Generator, positive: bool, looks: Sequence[Appearance],
                      distractors: Sequence[Appearance], height: int, width: int,
                      hue_shift: float = LOOK_ALIKE_HUE_SHIFT) -> tuple[np.ndarray, list[tuple[int, np.ndarray, int]]]:
    """Same contract as `easy.render_easy_image`: RGB uint8 and (category_id, visible mask, drawn area);
    `hue_shift`: how far the look-alikes' hue is from their class's (degrees)."""
    kinds: list[tuple[Appearance, int | None]] = []
    sizes: list[tuple[float, float]] = []

    def add(look: Appearance, category_id: int | None, small: bool) -> None:
        kinds.append((look, category_id))
        sizes.append(SMALL_SIZE if small else NORMAL_SIZE)

    for _ in range(int(rng.integers(2, 7)) if positive else 0):
        k = int(rng.integers(len(looks)))
        add(looks[k], k + 1, rng.uniform() < SMALL_FRACTION)
    for _ in range(int(rng.integers(1, 4))):
        add(look_alike(looks[int(rng.integers(len(looks)))], hue_shift), None, rng.uniform() < SMALL_FRACTION)
    for _ in range(int(rng.integers(2, 6)) if distractors else 0):
        add(distractors[int(rng.integers(len(distractors)))], None, True)
    order = rng.permutation(len(kinds))
    return draw(rng, [kinds[i] for i in order], height, width, radius_ranges=[sizes[i] for i in order],
                 apart=lambda obj: obj.look.hue)
