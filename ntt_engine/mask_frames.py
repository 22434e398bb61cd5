"""Masks between the working frame and the original image: nearest-neighbour index maps, one mask at a time.

Images larger than `max_image_side` are processed at a bounded working size (memory per image does not grow with
the resolution); their masks are mapped back to the original pixels only where a caller needs them there (a COCO
RLE, a Label Studio brush), one at a time. Both frames cover the whole image (types.py), so the map is a squash:
original pixel i takes working pixel floor((i + 0.5) · h / H), the pixel whose span holds i's centre.
"""
from __future__ import annotations

import numpy as np


def source_index(size: int, source_size: int) -> np.ndarray:
    """[size] working index of every original row (or column); non-decreasing, hits every source index when
    size ≥ source_size."""
    return np.minimum(((np.arange(size) + 0.5) * source_size / size).astype(np.int64), source_size - 1)


def scale_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`mask` [h, w] → [H, W] (nearest at pixel centres, up or down); `mask` itself when it already has that size."""
    if mask.shape == tuple(size):
        return mask
    rows = source_index(size[0], mask.shape[0])
    cols = source_index(size[1], mask.shape[1])
    return mask[rows[:, None], cols[None, :]]


def scaled_bbox(mask: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """COCO xywh of `scale_mask(mask, size)`'s pixels, computed without building it."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    y0, y1 = _extent(rows[0], rows[-1], size[0], mask.shape[0])
    x0, x1 = _extent(cols[0], cols[-1], size[1], mask.shape[1])
    if y1 < y0 or x1 < x0:  # only when shrinking: no original pixel's centre falls on the mask
        return (0.0, 0.0, 0.0, 0.0)
    return (float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1))


def _extent(first: int, last: int, size: int, source_size: int) -> tuple[int, int]:
    """First and last original index whose working index lies in [first, last]."""
    index = source_index(size, source_size)
    return int(np.searchsorted(index, first, "left")), int(np.searchsorted(index, last, "right")) - 1


def same_image_frames(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two mask sizes can be one image at two scales (the smaller one `image_io.bounded`'s downscale of the
    larger, up to rounding)."""
    (big_h, big_w), (small_h, small_w) = sorted([tuple(a), tuple(b)], key=lambda s: -s[0] * s[1])
    scale = max(small_h, small_w) / max(big_h, big_w)
    return abs(big_h * scale - small_h) <= 1 and abs(big_w * scale - small_w) <= 1


def common_frame(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Masks of one image at several sizes (the working size and the original) → all at the smallest of them, so
    that they can be compared without building anything at the larger size. Raises ValueError for sizes that
    cannot be one image."""
    shapes = {np.shape(m) for m in masks}
    if len(shapes) <= 1:
        return masks
    smallest = min(shapes, key=lambda s: s[0] * s[1])
    if not all(len(s) == 2 and same_image_frames(s, smallest) for s in shapes):
        raise ValueError(f"masks of one image must share a size (or be its working and original sizes), got sizes "
                         f"{sorted(shapes)}")
    return [scale_mask(np.asarray(m), smallest) for m in masks]
