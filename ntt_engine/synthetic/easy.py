"""The "easy" difficulty: 1-5 class objects per positive image (a distractor in a quarter of them), 0-3 distractors
on a negative image."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ntt_engine.synthetic.drawing import Appearance, draw


def render_easy_image(rng: np.random.Generator, positive: bool, looks: Sequence[Appearance],
                      distractors: Sequence[Appearance], height: int, width: int
                      ) -> tuple[np.ndarray, list[tuple[int, np.ndarray, int]]]:
    """Returns the RGB uint8 image and (category_id, visible mask, drawn area) of every class instance."""
    kinds: list[tuple[Appearance, int | None]] = []
    if positive:
        for _ in range(int(rng.integers(1, 6))):
            k = int(rng.integers(len(looks)))
            kinds.append((looks[k], k + 1))
        if rng.uniform() < 0.25:
            d = distractors[int(rng.integers(len(distractors)))]
            kinds.insert(int(rng.integers(len(kinds) + 1)), (d, None))
    else:
        for _ in range(int(rng.integers(0, 4))):
            kinds.append((distractors[int(rng.integers(len(distractors)))], None))
    return draw(rng, kinds, height, width)
