"""Colour planes of the weightless test backbones: hue, saturation and value, and how chromatic a pixel is."""
from __future__ import annotations

import numpy as np


def hsv_planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 [H, W, 3] → (hue in degrees [0, 360), saturation [0, 1], value [0, 1]) float32 planes."""
    rgb = np.asarray(image)[..., :3].astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(-1)
    chroma = value - rgb.min(-1)
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(value == r, ((g - b) / safe) % 6.0,
                   np.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) * 60.0
    hue = np.where(chroma > 0, hue % 360.0, 0.0).astype(np.float32)
    saturation = chroma / np.maximum(value, 1e-6)
    return hue, saturation, value


def chromatic_weight(saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """≈1 for clearly coloured pixels, ≈0 for greys (hue meaningless); a soft ramp between."""
    return np.clip((saturation - 0.25) / 0.2, 0, 1) * np.clip((value - 0.12) / 0.13, 0, 1)
