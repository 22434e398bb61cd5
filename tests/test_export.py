import numpy as np
import pytest

from ntt_engine.export import (has_holes, mask_to_bbox, mask_to_polygons, mask_to_rle, polygons_to_mask,
                               rle_to_mask)


def blob(seed, size=(60, 80)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    mask = np.zeros(size, bool)
    for _ in range(3):
        cy, cx, r = rng.integers(10, 50), rng.integers(10, 70), rng.integers(4, 12)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    return mask


def test_bbox_matches_mask_extent_exactly():
    mask = np.zeros((10, 12), bool)
    mask[3, 4] = True
    assert mask_to_bbox(mask) == (4.0, 3.0, 1.0, 1.0)
    mask[7, 9] = True
    assert mask_to_bbox(mask) == (4.0, 3.0, 6.0, 5.0)
    assert mask_to_bbox(np.zeros((5, 5), bool)) == (0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_rle_round_trip_is_pixel_exact(seed):
    mask = blob(seed)
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [60, 80]
    assert np.array_equal(rle_to_mask(rle), mask)


@pytest.mark.parametrize("seed", range(5))
def test_polygon_round_trip_is_pixel_exact_for_hole_free_masks(seed):
    mask = blob(seed)
    assert not has_holes(mask)
    back = polygons_to_mask(mask_to_polygons(mask), *mask.shape)
    assert np.array_equal(back, mask)


def test_single_pixel_and_line_polygons():
    for mask in (np.pad(np.ones((1, 1), bool), 3), np.pad(np.ones((1, 6), bool), 3)):
        back = polygons_to_mask(mask_to_polygons(mask), *mask.shape)
        assert np.array_equal(back, mask)


def test_holes_are_filled_in_polygons_but_kept_in_rle():
    mask = np.zeros((30, 30), bool)
    mask[5:25, 5:25] = True
    mask[12:18, 12:18] = False
    assert has_holes(mask)
    assert np.array_equal(rle_to_mask(mask_to_rle(mask)), mask)
    outline = polygons_to_mask(mask_to_polygons(mask), 30, 30)
    assert outline.sum() == 400 and outline[15, 15]  # outer outline only: the hole is filled
