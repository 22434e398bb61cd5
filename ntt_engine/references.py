"""Reference instances → pooled memory vectors (ALGORITHM.md §2.1), with the input checks that protect the memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .export import mask_to_bbox
from .inputs import reference_crop_box
from .pooling import pool_reference_with_level
from .types import PatchFeatures


class ReferenceError(ValueError):
    """A reference that cannot be used (empty or mis-sized mask, missing label); the memory is left unchanged."""


@dataclass(frozen=True)
class PooledReference:
    label: str
    vector: np.ndarray  # [C] float32
    level: float  # self-similarity level (see pooling.pool_reference_with_level)


def check_masks(masks: Sequence[np.ndarray], labels: Sequence[str], image_size: tuple[int, int],
                work_size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Masks at the image's size, or at the engine's working size (`work_size`, for images it downscaled)."""
    sizes = {tuple(image_size), tuple(work_size or image_size)}
    if len(masks) != len(labels):
        raise ReferenceError(f"got {len(masks)} masks but {len(labels)} labels")
    checked = []
    for i, (mask, label) in enumerate(zip(masks, labels)):
        if not isinstance(label, str) or not label:
            raise ReferenceError(f"region {i}: label must be a non-empty string, got {label!r}")
        mask = np.asarray(mask)
        if mask.shape not in sizes:
            raise ReferenceError(f"region {i} ({label}): mask shape {mask.shape} differs from the image "
                                 f"{tuple(image_size)}")
        mask = mask.astype(bool)
        if not mask.any():
            raise ReferenceError(f"region {i} ({label}): the mask is empty")
        checked.append(mask)
    return checked


def pool_references(image: np.ndarray, masks: Sequence[np.ndarray], labels: Sequence[str],
                    encode: Callable[[np.ndarray], PatchFeatures], crop: bool, context: float, sampling: str,
                    whole_image_features: Callable[[], PatchFeatures]) -> list[PooledReference]:
    """One raw pooled vector per mask. `crop`: encode a context crop per instance with `encode` (paper); otherwise
    pool the whole-image features (one forward per image, or none when the engine has them cached)."""
    pooled = []
    for i, (mask, label) in enumerate(zip(masks, labels)):
        if crop:
            x0, y0, x1, y1 = reference_crop_box(mask_to_bbox(mask), mask.shape, context)
            features = encode(np.ascontiguousarray(image[y0:y1, x0:x1]))
            pooled_mask = pool_reference_with_level(features, mask[y0:y1, x0:x1], sampling)
        else:
            pooled_mask = pool_reference_with_level(whole_image_features(), mask, sampling)
        if pooled_mask is None:
            raise ReferenceError(f"region {i} ({label}): the mask ({int(mask.sum())} px) covers no feature cell at "
                                 f"the encoder's resolution; use reference_mask_sampling='area' or a larger mask")
        vector, level = pooled_mask
        pooled.append(PooledReference(label, vector.numpy().astype(np.float32), level))
    return pooled
