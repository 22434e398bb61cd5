"""DINOv2 dense features through timm (ALGORITHM.md §1, §10 "Encoders").

timm's `vit_*_patch14_dinov2` models, fed the official Meta checkpoints through timm's own key converter
(`checkpoint_filter_fn`), reproduce the official patch tokens (to ~3e-6 at 518 px); this avoids vendoring the
DINOv2 repository. At input sizes other than 518 timm resamples the position embeddings once at load time, whereas the
official model interpolates them at every forward: close, not identical.
"""
from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import numpy as np
import timm
import torch
from timm.models.vision_transformer import checkpoint_filter_fn

from .precision import autocast_for
from .weights import random_init, require_checkpoint
from .. import inputs
from ..checkpoints import CheckpointError, describe_mismatch, weights_id
from ..inputs import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported: tests and callers import them here)
from ..types import PatchFeatures

logger = logging.getLogger(__name__)

PATCH_SIZE = 14

# registry name → timm architecture
TIMM_ARCHS: dict[str, str] = {
    "dinov2_vits14": "vit_small_patch14_dinov2",
    "dinov2_vitb14": "vit_base_patch14_dinov2",
    "dinov2_vitl14": "vit_large_patch14_dinov2",
    "dinov2_vitg14": "vit_giant_patch14_dinov2",
    "dinov2_vits14_reg": "vit_small_patch14_reg4_dinov2",
    "dinov2_vitb14_reg": "vit_base_patch14_reg4_dinov2",
    "dinov2_vitl14_reg": "vit_large_patch14_reg4_dinov2",
    "dinov2_vitg14_reg": "vit_giant_patch14_reg4_dinov2",
}


def load_state_dict_file(path: Path, expected: str) -> dict[str, torch.Tensor]:
    """Read a torch checkpoint safely (weights_only); unreadable / truncated files become CheckpointError."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} for {expected} does not exist") from exc
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"checkpoint {path} for {expected} is not a readable torch file (truncated or "
                              f"corrupt?): {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} for {expected} holds a {type(obj).__name__}, not a state dict")
    return obj


class DinoV2Encoder:
    """FeatureEncoder: the image squashed to input_size², patch tokens after the final norm → [h, w, C].

    `input_recipe` picks how pixels become the input tensor (see `ntt_engine.inputs`); "reference" also treats
    reference crops differently from whole targets (`encode_crop`), as the reference implementation does."""

    def __init__(self, model_name: str, checkpoint: Path | None, input_size: int = 518, device: str = "cpu",
                 random_weights: bool = False, checkpoint_sha256: str | None = None,
                 precision: str = "fp32", input_recipe: str = "sam2") -> None:
        if model_name not in TIMM_ARCHS:
            raise ValueError(f"unknown DINOv2 model {model_name!r}; choose one of {', '.join(TIMM_ARCHS)}")
        if input_size % PATCH_SIZE:
            raise ValueError(f"DINOv2 input size must be a multiple of {PATCH_SIZE}, got {input_size}")
        require_checkpoint(model_name, checkpoint, random_weights)
        self.model_name = model_name
        self.input_size = input_size
        self.input_recipe = inputs.check_recipe(input_recipe)
        self.device = torch.device(device)
        self.precision = precision
        autocast_for(self.device, precision)  # validates the value early
        arch = TIMM_ARCHS[model_name]

        if random_weights:
            self.model, weights = random_init(model_name, lambda: timm.create_model(
                arch, pretrained=False, img_size=input_size, num_classes=0))
        else:
            path = Path(checkpoint)  # type: ignore[arg-type]
            self.model = timm.create_model(arch, pretrained=False, img_size=input_size, num_classes=0)
            self._load(path, f"{model_name} ({arch})")
            weights = weights_id(path, checkpoint_sha256)
        self.model.eval().to(self.device)
        # input size and recipe are part of the name: features from other inputs are not interchangeable
        recipe = "" if input_recipe == "sam2" else f"+{input_recipe}-inputs"
        self.name = f"{model_name}@{input_size}{recipe}:{weights}"
        self.num_prefix_tokens = int(self.model.num_prefix_tokens)  # CLS + registers, dropped from the output

    def _load(self, path: Path, expected: str) -> None:
        raw = load_state_dict_file(path, expected)
        try:
            state = checkpoint_filter_fn(raw, self.model)  # Meta's layout → timm's (and pos-embed resampling)
        except (RuntimeError, KeyError, ValueError, IndexError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path} is not a DINOv2 state dict for {expected}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        problems = describe_mismatch(self.model.state_dict(), state)
        if problems:
            raise CheckpointError(f"checkpoint {path} does not fit {expected} (another DINOv2 size, or registers "
                                  f"where none are expected?): {problems}")
        self.model.load_state_dict(state, strict=True)

    @property
    def grid_size(self) -> tuple[int, int]:
        side = self.input_size // PATCH_SIZE
        return side, side

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Whole target image, uint8 [H, W, 3] → normalised [1, 3, S, S] (ALGORITHM.md §1, §4.1)."""
        if self.input_recipe == "reference":
            return inputs.reference_dinov2_target_input(image, self.input_size, self.device)
        return inputs.sam2_dinov2_input(image, self.input_size, self.device)

    def preprocess_crop(self, crop: np.ndarray) -> torch.Tensor:
        """Reference crop, uint8 [h, w, 3] → normalised [1, 3, S, S] (ALGORITHM.md §2.1)."""
        if self.input_recipe == "reference":
            return inputs.reference_dinov2_crop_input(crop, self.input_size, self.device)
        return inputs.sam2_dinov2_input(crop, self.input_size, self.device)

    def encode(self, image: np.ndarray) -> PatchFeatures:
        return self._forward(self.preprocess(image), image)

    def encode_crop(self, crop: np.ndarray) -> PatchFeatures:
        """Features of a reference crop; the grid covers the whole crop."""
        return self._forward(self.preprocess_crop(crop), crop)

    def _forward(self, x: torch.Tensor, image: np.ndarray) -> PatchFeatures:
        with torch.inference_mode(), autocast_for(self.device, self.precision):
            tokens = self.model.forward_features(x)  # [1, prefix + h·w, C], after the final norm
        h, w = self.grid_size
        patches = tokens[0, self.num_prefix_tokens:]
        grid = patches.reshape(h, w, -1).float().cpu().clone()  # clone: plain tensor, not an inference one
        return PatchFeatures(grid=grid, image_size=(int(image.shape[0]), int(image.shape[1])),
                             input_size=(self.input_size, self.input_size))
