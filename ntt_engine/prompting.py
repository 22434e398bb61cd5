"""Where to prompt the proposer: the paper's dense grid, or the similarity-guided prompts of ALGORITHM.md §11.

Similarity prompting puts a click on each local maximum of the target's patch similarity to the class prototypes
(above a per-class level calibrated on the references), adds a coarse grid for recall, and lets the engine skip any
prompt that falls inside a mask it already accepted. The prompt count, not the backbones, dominates on a CPU.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .memory import Prototypes
from .types import PatchFeatures


def paper_grid(image_size: tuple[int, int], per_side: int, frame: int = 1024) -> np.ndarray:
    """The paper's grid, `linspace(0, frame−1, n) + 0.5` in a squashed frame×frame image, in original pixels.

    In the reference's order, y varying fastest (its `torch.meshgrid` indexes 'ij' with x first): with a tie in
    predicted IoU, NMS keeps the earlier prompt."""
    height, width = image_size
    axis = np.linspace(0, frame - 1, per_side) + 0.5
    xs, ys = np.meshgrid(axis * width / frame, axis * height / frame, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def coarse_grid(image_size: tuple[int, int], per_side: int) -> np.ndarray:
    """Cell centres of an n×n grid, (i + ½)/n, as SAM's automatic mask generator places them."""
    if per_side <= 0:
        return np.zeros((0, 2), np.float32)
    height, width = image_size
    axis = (np.arange(per_side) + 0.5) / per_side
    xs, ys = np.meshgrid(axis * width, axis * height)
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def similarity_map(features: PatchFeatures, prototypes: Prototypes) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch: the best cosine to any prototype and that prototype's index → ([h, w], [h, w])."""
    grid = F.normalize(features.grid.float(), dim=-1)
    similarity = grid @ prototypes.vectors.T  # [h, w, K]
    return similarity.max(dim=-1)


def similarity_peaks(features: PatchFeatures, prototypes: Prototypes, levels: torch.Tensor, fraction: float,
                     max_prompts: int, window: int = 3) -> np.ndarray:
    """Local maxima of the similarity map above `fraction` × the class's reference level, best first, as pixel
    coordinates of the patch centres (original image frame)."""
    if len(prototypes) == 0 or max_prompts <= 0:
        return np.zeros((0, 2), np.float32)
    best, cls = similarity_map(features, prototypes)
    pooled = F.max_pool2d(best[None, None], window, stride=1, padding=window // 2)[0, 0]
    is_peak = (best >= pooled) & (best > fraction * levels[cls])
    rows, cols = torch.nonzero(is_peak, as_tuple=True)
    order = torch.argsort(best[rows, cols], descending=True, stable=True)[:max_prompts]
    gh, gw = best.shape
    height, width = features.image_size
    xs = (cols[order].float() + 0.5) * width / gw
    ys = (rows[order].float() + 0.5) * height / gh
    return torch.stack([xs, ys], dim=1).numpy().astype(np.float32)


def inside_masks(points_xy: np.ndarray, logits: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """For each point, whether any of the masks (logits > 0 over the whole image) covers it."""
    if len(points_xy) == 0 or logits.shape[0] == 0:
        return np.zeros(len(points_xy), bool)
    height, width = image_size
    mh, mw = logits.shape[-2:]
    cols = np.clip((points_xy[:, 0] * mw / width).astype(np.int64), 0, mw - 1)
    rows = np.clip((points_xy[:, 1] * mh / height).astype(np.int64), 0, mh - 1)
    covered = (logits[:, torch.from_numpy(rows), torch.from_numpy(cols)] > 0).any(dim=0)
    return covered.numpy()
