"""Stage `pool`: one feature vector per mask, from a patch-feature grid.

Target proposals (ALGORITHM.md §4.2) average the grid *bilinearly upsampled* to the mask resolution over the mask's
pixels. Bilinear resizing is linear and separable, U = A_h ⊗ A_w, so Σ_pixels M·(U G) = Σ_cells (A_hᵀ M A_w)·G:
we pool with the adjoint on the patch grid and never materialise the upsampled [mh·mw, C] map (exact up to float
rounding; `tests/test_pooling.py` checks it against the straightforward implementation).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .types import PatchFeatures


@functools.lru_cache(maxsize=64)
def resize_matrix(src: int, dst: int) -> torch.Tensor:
    """[dst, src] matrix of torch's bilinear resize along one axis (align_corners=False, antialias=True)."""
    # along the last axis: torch's antialiased kernel mis-handles a size-1 last axis (checked on torch 2.14)
    eye = torch.eye(src, dtype=torch.float64).reshape(src, 1, 1, src)
    resized = F.interpolate(eye, size=(1, dst), mode="bilinear", align_corners=False, antialias=True)
    return resized.reshape(src, dst).T.contiguous()


def pool_proposals(features: PatchFeatures, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the bilinearly upsampled grid inside each mask → ([n, C] L2-normalised vectors, [n] valid flags).

    `masks` is [n, mh, mw] (bool or float weights) over the whole image. Empty masks are flagged invalid and get
    a zero vector (the reference code produced NaN there).
    """
    grid = features.grid.float()
    gh, gw, dim = grid.shape
    count = masks.shape[0]
    if count == 0:
        return torch.zeros((0, dim)), torch.zeros((0,), dtype=torch.bool)
    mh, mw = masks.shape[-2:]
    a_h = resize_matrix(gh, mh).float()  # [mh, gh]
    a_w = resize_matrix(gw, mw).float()  # [mw, gw]
    weights = a_h.T @ masks.float() @ a_w  # [n, gh, gw]
    pixel_counts = masks.flatten(1).float().sum(1)
    sums = weights.reshape(count, gh * gw) @ grid.reshape(gh * gw, dim)
    valid = pixel_counts > 0
    means = sums / pixel_counts.clamp(min=1).unsqueeze(1)
    return normalise(means) * valid.unsqueeze(1), valid


def pool_proposals_reference(features: PatchFeatures, masks: torch.Tensor) -> torch.Tensor:
    """The straightforward §4.2 computation (upsample, then mask-mean). Used by tests to check `pool_proposals`."""
    grid = features.grid.float().permute(2, 0, 1).unsqueeze(0)
    upsampled = F.interpolate(grid, size=masks.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    flat = upsampled[0].flatten(1)  # [C, mh*mw]
    m = masks.flatten(1).float()
    return normalise((m @ flat.T) / m.sum(1, keepdim=True))


def reference_patch_weights(features: PatchFeatures, mask: np.ndarray, sampling: str) -> torch.Tensor:
    """Mask → per-cell weights on the feature grid [gh, gw], for pooling a reference (ALGORITHM.md §2.1).

    "nearest" (paper parity): the mask is resized bilinearly to the encoder's input size, then sampled at the top-left
    pixel of each patch. "area": the fraction of each cell the mask covers (§9.4).
    """
    gh, gw = features.grid.shape[:2]
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    if sampling == "area":
        return F.adaptive_avg_pool2d(tensor, (gh, gw))[0, 0]
    if sampling != "nearest":
        raise ValueError(f"unknown reference_mask_sampling {sampling!r}; use 'nearest' or 'area'")
    if features.input_size is not None:
        tensor = F.interpolate(tensor, size=features.input_size, mode="bilinear", align_corners=False)
    return F.interpolate(tensor, size=(gh, gw), mode="nearest")[0, 0]


def pool_reference(features: PatchFeatures, mask: np.ndarray, sampling: str) -> torch.Tensor | None:
    """Weighted mean of the raw patch features under the mask (not normalised, as the paper's e[c,i]).

    Returns None when the mask covers no patch at this resolution (the caller reports it).
    """
    pooled = pool_reference_with_level(features, mask, sampling)
    return None if pooled is None else pooled[0]


def pool_reference_with_level(features: PatchFeatures, mask: np.ndarray, sampling: str,
                              percentile: float = 0.2) -> tuple[torch.Tensor, float] | None:
    """`pool_reference` plus the reference's self-similarity level: a low percentile of the cosine between its
    foreground patches and its pooled vector (ALGORITHM.md §11.2), which calibrates similarity prompting."""
    weights = reference_patch_weights(features, mask, sampling).reshape(-1)
    total = float(weights.sum())
    if total <= 0:
        return None
    grid = features.grid.float().reshape(-1, features.grid.shape[-1])
    vector = (weights @ grid) / total
    foreground = weights >= 0.5 * float(weights.max())
    cosines = normalise(grid[foreground]) @ normalise(vector)
    return vector, float(torch.quantile(cosines, percentile))


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors, dim=-1, eps=1e-12)
