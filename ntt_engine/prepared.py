"""What the engine holds of one image: the image at its working size (PreparedImage) and the per-image work reused
after every memory change (ImageAnalysis)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .mask_frames import scaled_bbox
from .types import Instance, PatchFeatures, Proposals


@dataclass(frozen=True)
class ImageAnalysis:
    """Per-image work reused after every memory change: features, proposals and their descriptors.

    With similarity prompting it grows: a new memory state may add prompts, which are decoded once.
    """

    features: PatchFeatures
    proposals: Proposals  # already through the quality gate
    vectors: torch.Tensor  # [n, C] L2-normalised proposal descriptors
    valid: torch.Tensor  # [n] False for empty masks
    prompted: np.ndarray  # [p, 2] every point decoded so far (original pixels of the work image)

    @property
    def prompts_used(self) -> int:
        return len(self.prompted)


@dataclass(frozen=True)
class PreparedImage:
    """One image as the engine works on it: every mask, feature and proposal of it lives at `work`'s size, bounded
    by `max_image_side` (so memory per image does not grow with the resolution); outputs carry `original_size`."""

    work: np.ndarray  # RGB uint8, the caller's image downscaled to at most max_image_side
    original_size: tuple[int, int]  # (H, W) of the caller's image
    key: str

    @property
    def work_size(self) -> tuple[int, int]:
        return self.work.shape[0], self.work.shape[1]

    @property
    def scale(self) -> float:
        return self.work.shape[0] / self.original_size[0]

    def instance(self, label: str, score: float, mask: np.ndarray, quality: float,
                 nearest: tuple[str, float] | None = None) -> Instance:
        """A detection from its working-size mask, its box in original pixels."""
        return Instance(label, score, mask, scaled_bbox(mask, self.original_size), quality, self.original_size,
                        nearest)
