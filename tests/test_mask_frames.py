"""Masks between the engine's working size and the original image (ntt_engine/mask_frames.py)."""
import numpy as np
import pytest

from ntt_engine.export import mask_to_bbox
from ntt_engine.mask_frames import scale_mask, scaled_bbox, source_index
from ntt_engine.types import Instance


@pytest.mark.parametrize("work,original", [((60, 80), (360, 480)), ((7, 5), (23, 17)), ((10, 10), (10, 10)),
                                           ((1024, 683), (6000, 4000))])
def test_scaled_bbox_is_the_extent_of_the_scaled_mask(work, original):
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros(work, bool)
        y, x = rng.integers(0, work[0]), rng.integers(0, work[1])
        mask[y:y + rng.integers(1, 4), x:x + rng.integers(1, 4)] = True
        assert scaled_bbox(mask, original) == mask_to_bbox(scale_mask(mask, original))


def test_scaling_keeps_the_frame_and_every_working_pixel():
    index = source_index(600, 100)
    assert index[0] == 0 and index[-1] == 99 and set(index.tolist()) == set(range(100))
    assert np.all(np.diff(index) >= 0)
    mask = np.zeros((100, 100), bool)
    mask[10:20, 30:40] = True
    full = scale_mask(mask, (600, 600))
    assert full.sum() == mask.sum() * 36 and mask_to_bbox(full) == (180.0, 60.0, 60.0, 60.0)
    assert scale_mask(mask, (100, 100)) is mask  # no copy at the same size


def test_an_instance_gives_its_mask_in_original_pixels():
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True
    inst = Instance("cat", 0.9, mask, scaled_bbox(mask, (8, 12)), 0.8, (8, 12))
    assert inst.original_size == (8, 12) and inst.full_mask().shape == (8, 12)
    assert inst.bbox == (6.0, 2.0, 3.0, 2.0)
    small = Instance("cat", 0.9, mask, mask_to_bbox(mask))
    assert small.original_size == (4, 4) and small.full_mask() is mask
