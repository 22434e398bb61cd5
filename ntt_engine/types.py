"""Typed data passed between the pipeline stages.

Frames: every mask and feature grid in these types covers the *whole* image it came from, mapped linearly
(a squash, as in the paper). A grid of h×w cells over an H×W image puts cell (i, j) over the pixel rectangle
[i·H/h, (i+1)·H/h) × [j·W/w, (j+1)·W/w). Converting between resolutions is therefore a plain resize.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .mask_frames import scale_mask


@dataclass(frozen=True)
class PatchFeatures:
    """Dense features of one image: `grid` is [h, w, C] float32 raw (not L2-normalised) patch tokens."""

    grid: torch.Tensor
    image_size: tuple[int, int]  # (H, W) of the image that was encoded
    input_size: tuple[int, int] | None = None  # (h, w) the encoder resized the image to, e.g. (518, 518)

    @property
    def dim(self) -> int:
        return int(self.grid.shape[-1])

    def nbytes(self) -> int:
        return self.grid.element_size() * self.grid.nelement()


@dataclass(frozen=True)
class Proposals:
    """Candidate masks of one image, as logits (mask = logit > 0) over the whole image at any resolution.

    `quality` is the proposer's own confidence, SAM2's predicted IoU in [0, 1].
    """

    logits: torch.Tensor  # [N, h, w] float32
    quality: torch.Tensor  # [N] float32
    image_size: tuple[int, int]  # (H, W) of the original image
    prompt_index: torch.Tensor | None = None  # [N] which prompt each proposal answers; None = one per prompt

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def masks(self) -> torch.Tensor:
        return self.logits > 0

    def select(self, index: torch.Tensor) -> "Proposals":
        prompts = None if self.prompt_index is None else self.prompt_index[index]
        return Proposals(self.logits[index], self.quality[index], self.image_size, prompts)

    @staticmethod
    def concat(parts: "list[Proposals]", image_size: tuple[int, int]) -> "Proposals":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Proposals.empty(image_size)
        return Proposals(torch.cat([p.logits for p in parts]), torch.cat([p.quality for p in parts]), image_size)

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.logits, self.quality))

    @staticmethod
    def empty(image_size: tuple[int, int], resolution: tuple[int, int] = (256, 256)) -> "Proposals":
        return Proposals(torch.zeros((0, *resolution)), torch.zeros((0,)), image_size)


@dataclass(frozen=True)
class Instance:
    """One detection. `mask` covers the whole image at the engine's working size, which is the original size
    unless the image was larger than `max_image_side`; `full_mask()` gives it in original pixels. `bbox` is COCO
    xywh in original pixels, matching `full_mask()`'s extent exactly."""

    label: str
    score: float
    mask: np.ndarray  # [h, w] bool
    bbox: tuple[float, float, float, float]
    quality: float = 0.0  # the proposer's predicted IoU, for information
    image_size: tuple[int, int] | None = None  # (H, W) of the original image; None: the mask's own size
    nearest: tuple[str, float] | None = None  # why: the reference of its class it is most similar to (id, cosine)

    @property
    def original_size(self) -> tuple[int, int]:
        return tuple(self.image_size) if self.image_size is not None else self.mask.shape[:2]

    def full_mask(self) -> np.ndarray:
        """[H, W] bool in original pixels (built on each call: hold one at a time for large images)."""
        return scale_mask(self.mask, self.original_size)


@dataclass(frozen=True)
class Detected:
    """What `Engine.detect` found on one image: the instances kept, best score first, and (label, score) of every
    detection of the image, kept or not, best first."""

    instances: list[Instance]
    scores: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class PromptSet:
    """Prompts for one segmentation request in original image pixels (x, y).

    Either one prompt made of all `points` (labels 1 = positive, 0 = negative), or one prompt per box.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # xyxy
