"""The two pluggable backbones. Anything with these methods can drive the engine.

Production implementations: `backbones.dinov2.DinoV2Encoder` and `backbones.sam2_proposer.Sam2ProposalGenerator`.
Test implementations (no weights needed): `backbones.weightless`.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from .types import PatchFeatures, PromptSet, Proposals


@runtime_checkable
class FeatureEncoder(Protocol):
    """Dense semantic features of an RGB image.

    `name` identifies the model *and its weights*: it becomes part of the memory bank's compatibility check and of
    the cache key, so two encoders that give different features must have different names.
    """

    name: str

    def encode(self, image: np.ndarray) -> PatchFeatures:
        """`image` is RGB uint8 [H, W, 3]; the returned grid covers the whole image (see `types`).

        An encoder may also offer `encode_crop(crop) -> PatchFeatures` for reference crops, when it prepares them
        differently from whole images (the paper's DINOv2 does, `ntt_engine.inputs`); without it crops use `encode`.
        """
        ...


@runtime_checkable
class ProposalGenerator(Protocol):
    """A promptable segmenter (SAM2-like): embed an image once, then decode many prompts against it."""

    name: str

    def embed(self, image: np.ndarray) -> Any:
        """Per-image state reused by every decode call (SAM2: the image encoder's output)."""
        ...

    def propose(self, embedding: Any, points_xy: np.ndarray, min_quality: float | None = None) -> Proposals:
        """One proposal per single positive click at `points_xy` [N, 2] (original pixels, x then y), in order.

        A proposer may drop proposals whose quality is not above `min_quality` early, to save work; it then sets
        `Proposals.prompt_index`. Ignoring `min_quality` and returning all N is always correct (the engine gates).
        """
        ...

    def segment(self, embedding: Any, prompts: PromptSet) -> Proposals:
        """Interactive / box prompting: one proposal per box, or one for all points together when no box is given."""
        ...
