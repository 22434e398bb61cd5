"""Stage `inputs`: RGB uint8 pixels → the backbones' normalised input tensors, one function per step.

Two recipes (`EngineConfig.input_recipe`):

- "reference" (preset `paper`, ALGORITHM.md §1, §2.1, §3.1, §4.1): exactly the reference implementation's steps, so
  identical weights see identical input tensors (byte for byte; `tests/test_paper_inputs.py` pins every step):
  - target → SAM2: PIL `convert('RGB').resize((1024, 1024))` (bicubic, PIL's own filter support), ÷255 in float64,
    cast to float32, ImageNet mean/std as torchvision's Normalize computes it ((x − mean) / std in float32);
  - target → DINOv2: that same [0, 1] 1024² tensor, `F.interpolate(..., 518, mode='bicubic')` (align_corners
    False, no antialias), then mean/std;
  - reference crop → DINOv2: the crop of the [0, 1] image at original size (box from `reference_crop_box`), bicubic
    `F.interpolate` straight to 518, then mean/std. Its mask is resized bilinearly to 518, then nearest to the patch
    grid (that part lives in `pooling.reference_patch_weights`).
- "sam2" (presets `fast`, `synthetic`): sam2's own transforms for SAM2 (torchvision antialiased bilinear), a PIL
  bicubic squash straight to the DINOv2 size for targets and crops alike.

Resizes and normalisation run on the model's device, as the reference does; the ÷255 runs on the CPU (numpy).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_RECIPES = ("reference", "sam2")
SAM2_RESOLUTION = 1024  # the reference squashes every target to this before either backbone sees it


def check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")


def check_recipe(recipe: str) -> str:
    if recipe not in INPUT_RECIPES:
        raise ValueError(f"input_recipe must be one of {', '.join(map(repr, INPUT_RECIPES))}, got {recipe!r}")
    return recipe


# ------------------------------------------------------------------------------------------------ single steps
def pil_squash(image: np.ndarray, side: int) -> np.ndarray:
    """PIL `convert('RGB').resize((side, side))` with PIL's default filter for RGB, bicubic (uint8 out)."""
    return np.asarray(Image.fromarray(image).convert("RGB").resize((side, side), Image.BICUBIC))


def unit_float(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → float32 [3, H, W] in [0, 1]: ÷255 in float64 (numpy), then cast, as sam2's image loader."""
    return torch.from_numpy(image / 255.0).permute(2, 0, 1).to(torch.float32)


def bicubic(batch: torch.Tensor, side: int) -> torch.Tensor:
    """[B, 3, h, w] float → [B, 3, side, side]: `F.interpolate` bicubic, align_corners False, no antialias, no
    clamping (overshoot past [0, 1] is kept, as in the reference)."""
    return F.interpolate(batch, size=(side, side), mode="bicubic", align_corners=False)


def imagenet_normalise(batch: torch.Tensor) -> torch.Tensor:
    """(x − mean) / std in x's dtype: torchvision's Normalize (subtract, then divide; not × 1/std)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
    return (batch - mean) / std


def reference_crop_box(bbox_xywh: Sequence[float], image_size: tuple[int, int],
                       context: float) -> tuple[int, int, int, int]:
    """The reference's crop (§2.1): box corners truncated to int, a square of side max(w, h)·(1 + context) around
    their midpoint, each edge truncated to int and clipped to the image → (x0, y0, x1, y1), end exclusive.

    Never empty: a degenerate crop (only possible for a box outside the image) keeps one pixel."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    height, width = image_size
    x1, y1, x2, y2 = int(x), int(y), int(x + w), int(y + h)
    mid_x, mid_y = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    half = max(x2 - x1, y2 - y1) * (1.0 + context) * 0.5
    crop_x0, crop_y0 = max(0, int(mid_x - half)), max(0, int(mid_y - half))
    crop_x1, crop_y1 = min(width, int(mid_x + half)), min(height, int(mid_y + half))
    crop_x0, crop_y0 = min(crop_x0, width - 1), min(crop_y0, height - 1)
    return crop_x0, crop_y0, max(crop_x1, crop_x0 + 1), max(crop_y1, crop_y0 + 1)


# ------------------------------------------------------------------------------------------------ recipes
def reference_sam2_input(image: np.ndarray, device: torch.device, resolution: int = SAM2_RESOLUTION) -> torch.Tensor:
    """Target → SAM2 [1, 3, R, R]: PIL bicubic squash, ÷255, mean/std."""
    check_rgb(image)
    return imagenet_normalise(unit_float(pil_squash(image, resolution)).to(device)[None])


def reference_dinov2_target_input(image: np.ndarray, side: int, device: torch.device,
                                  squash: int = SAM2_RESOLUTION) -> torch.Tensor:
    """Target → DINOv2 [1, 3, S, S]: the SAM2 squash in [0, 1], bicubic `F.interpolate` to S, mean/std."""
    check_rgb(image)
    return imagenet_normalise(bicubic(unit_float(pil_squash(image, squash)).to(device)[None], side))


def reference_dinov2_crop_input(crop: np.ndarray, side: int, device: torch.device) -> torch.Tensor:
    """Reference crop (already cut from the original-size image) → DINOv2 [1, 3, S, S]: ÷255, bicubic
    `F.interpolate` to S, mean/std. Cropping uint8 then ÷255 equals the reference's ÷255 then crop (elementwise)."""
    check_rgb(crop)
    return imagenet_normalise(bicubic(unit_float(crop).to(device)[None], side))


def sam2_dinov2_input(image: np.ndarray, side: int, device: torch.device) -> torch.Tensor:
    """Target or crop → DINOv2 [1, 3, S, S], "sam2" recipe: PIL bicubic squash straight to S, ÷255, mean/std."""
    check_rgb(image)
    resized = torch.from_numpy(pil_squash(image, side).copy()).to(device).permute(2, 0, 1).float().div_(255.0)
    return imagenet_normalise(resized[None])
