"""The weightless TEST encoder `ColourTextureEncoder` (see the package's docstring)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ...types import PatchFeatures
from .colour import chromatic_weight, hsv_planes


class ColourTextureEncoder:
    """TEST `FeatureEncoder` "test-colour-texture-v1": colour + texture statistics per cell, no weights.

    The grid has ceil(H/cell) × ceil(W/cell) cells over the whole image (or over an `input_size` square when the
    image is first squashed to that side), following the frame convention of `ntt_engine.types`: pixel (y, x)
    belongs to cell (⌊(y+½)·h/H⌋, ⌊(x+½)·w/W⌋), so cell (i, j) covers [i·H/h, (i+1)·H/h) × [j·W/w, (j+1)·W/w).

    Channels (all ≥ 0), 24 + 3 + 5 + 5 = 37, each a mean over the cell's pixels:
      - 24 soft hue bins (15° apart, Gaussian σ ≈ 8°), weighted by how chromatic each pixel is;
      - 3 soft brightness bins (dark / mid / light) weighted by how achromatic each pixel is;
      - 5 texture channels — the |∂x|, |∂y|, |∂diag|, |∂anti-diag| shares of the luminance-gradient energy times its
        strength, and flatness — over the cell and its 8 neighbours, gated by that window's chromatic weight;
      - the same 5 gated by the achromatic weight (background texture never resembles object texture).
    With `fine_texture` (v2) the 5 texture channels become 19 (`_texture_code`'s 18 codes and flatness): 65 in all.
    """

    HUE_BINS = 24
    HUE_SIGMA = 8.0
    FINE_HUE_BINS = 72  # pixels are binned at 5° first, then smoothed onto the 24 output bins
    TEXTURE_WEIGHT = 0.5
    TEXTURE_SCALE = 0.03  # gradient energy at which texture strength is 0.5

    FINE_TEXTURE_WEIGHT = 1.0  # v2: texture counts about as much as colour
    EDGE_LEVEL = 0.04  # v2: a pixel whose luminance gradient exceeds this is an edge pixel

    def __init__(self, cell: int = 8, input_size: int | None = None, fine_texture: bool = False):
        if cell < 1:
            raise ValueError(f"cell must be >= 1, got {cell}")
        self.cell = int(cell)
        self.input_size = None if input_size is None else int(input_size)
        self.fine_texture = bool(fine_texture)
        suffix = ("" if self.cell == 8 else f"-cell{self.cell}") + (
            "" if self.input_size is None else f"-in{self.input_size}")
        self.name = ("test-colour-texture-v2" if self.fine_texture else "test-colour-texture-v1") + suffix
        fine = (np.arange(self.FINE_HUE_BINS) + 0.5) * (360.0 / self.FINE_HUE_BINS)
        centres = np.arange(self.HUE_BINS) * (360.0 / self.HUE_BINS)
        diff = (fine[:, None] - centres[None, :] + 180.0) % 360.0 - 180.0
        kernel = np.exp(-0.5 * (diff / self.HUE_SIGMA) ** 2)
        self._hue_kernel = kernel / kernel.sum(1, keepdims=True)  # [72, 24], rows sum to 1

    @property
    def dim(self) -> int:
        return self.HUE_BINS + 3 + (38 if self.fine_texture else 10)

    def __repr__(self) -> str:
        return (f"ColourTextureEncoder(cell={self.cell}, input_size={self.input_size}, "
                f"fine_texture={self.fine_texture}) [TEST backbone]")

    def encode(self, image: np.ndarray) -> PatchFeatures:
        if image.ndim != 3 or image.shape[2] < 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        original = (int(image.shape[0]), int(image.shape[1]))
        work = np.ascontiguousarray(image[..., :3])
        if self.input_size is not None:
            t = torch.from_numpy(work.copy()).permute(2, 0, 1)[None].float()
            t = F.interpolate(t, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
            work = t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        height, width = work.shape[:2]
        grid_h, grid_w = math.ceil(height / self.cell), math.ceil(width / self.cell)
        cell_y = ((np.arange(height) + 0.5) * grid_h / height).astype(np.int64)
        cell_x = ((np.arange(width) + 0.5) * grid_w / width).astype(np.int64)
        cell_of = (cell_y[:, None] * grid_w + cell_x[None, :]).ravel()
        cells = grid_h * grid_w
        pixels_per_cell = np.bincount(cell_of, minlength=cells).astype(np.float64)

        def cell_mean(values: np.ndarray) -> np.ndarray:
            return np.bincount(cell_of, weights=values.ravel(), minlength=cells) / pixels_per_cell

        hue, sat, val = hsv_planes(work)
        chromatic = chromatic_weight(sat, val)
        achromatic = 1.0 - chromatic

        fine_bin = np.minimum((hue * (self.FINE_HUE_BINS / 360.0)).astype(np.int64), self.FINE_HUE_BINS - 1)
        fine = np.bincount((cell_of * self.FINE_HUE_BINS + fine_bin.ravel()), weights=chromatic.ravel(),
                           minlength=cells * self.FINE_HUE_BINS).reshape(cells, self.FINE_HUE_BINS)
        hue_hist = (fine @ self._hue_kernel) / pixels_per_cell[:, None]  # [cells, 24]

        centres = (0.15, 0.5, 0.85)
        bright = np.stack([np.clip(1 - np.abs(val - c) / 0.35, 0, None) for c in centres])
        bright = bright / np.maximum(bright.sum(0, keepdims=True), 1e-6) * achromatic[None]
        bright_cells = np.stack([cell_mean(b) for b in bright], 1)  # [cells, 3]

        lum = work.astype(np.float32).mean(-1) / 255.0
        padded = np.pad(lum, 1, mode="edge")
        diag = 0.5 / math.sqrt(2)
        gradients = (
            np.abs(padded[1:-1, 2:] - padded[1:-1, :-2]) * 0.5,
            np.abs(padded[2:, 1:-1] - padded[:-2, 1:-1]) * 0.5,
            np.abs(padded[2:, 2:] - padded[:-2, :-2]) * diag,
            np.abs(padded[2:, :-2] - padded[:-2, 2:]) * diag,
        )
        planes = [cell_mean(g) for g in gradients] + [cell_mean(chromatic)]
        if self.fine_texture:  # dark share (below the window's mean luminance) and edge share of each window
            window_lum = self._window_mean(cell_mean(lum), grid_h, grid_w)
            planes += [cell_mean(lum < window_lum[cell_of].reshape(lum.shape)),
                       cell_mean(sum(gradients) > self.EDGE_LEVEL)]
        stats = np.stack(planes, 0)  # [5 or 7, cells]
        local = self._window_mean(stats, grid_h, grid_w)
        energy = local[:4].sum(0)
        strength = energy / (energy + self.TEXTURE_SCALE)
        shares = local[:4] / np.maximum(energy, 1e-9)
        if self.fine_texture:
            texture = np.concatenate([self._texture_code(shares, local[5], local[6]) * strength[None],
                                      (1 - strength)[None]]) * self.FINE_TEXTURE_WEIGHT
        else:
            texture = np.concatenate([shares * strength[None], (1 - strength)[None]]) * self.TEXTURE_WEIGHT
        local_chromatic = local[4:5]
        texture = np.concatenate([texture * local_chromatic, texture * (1 - local_chromatic)]).T

        grid = np.concatenate([hue_hist, bright_cells, texture], 1).reshape(grid_h, grid_w, -1)
        return PatchFeatures(torch.from_numpy(grid.astype(np.float32)), original, (height, width))

    @staticmethod
    def _texture_code(shares: np.ndarray, dark: np.ndarray, edges: np.ndarray) -> np.ndarray:
        """v2: soft one-hot codes (like the hue bins) of a window's texture, so that textures of one hue get nearly
        orthogonal vectors: orientation (x-, y-, diagonal-, anti-diagonal-dominant or isotropic) × edge share
        (3 bins), and dark share (3 bins). [4, cells] shares, [cells] dark and edge shares → [18, cells]."""
        x, y, d, a = shares
        axis = np.clip(2 * (x - y) / np.maximum(x + y, 1e-9), -1, 1)
        diagonal = np.clip(2 * (d - a) / np.maximum(d + a, 1e-9), -1, 1)
        dominant = np.stack([axis.clip(0), (-axis).clip(0), diagonal.clip(0), (-diagonal).clip(0)])
        orientation = np.concatenate([dominant, (1 - dominant.max(0))[None]])  # [5, cells]
        def bins(values: np.ndarray, centres: tuple[float, ...], sigma: float) -> np.ndarray:
            member = np.exp(-0.5 * ((values[None] - np.array(centres)[:, None]) / sigma) ** 2)
            return member / np.maximum(member.sum(0, keepdims=True), 1e-9)

        edge = bins(edges, (0.5, 0.65, 0.8), 0.07)  # [3, cells]
        joint = (orientation[:, None] * edge[None]).reshape(15, -1)
        return np.concatenate([joint, bins(dark, (0.3, 0.5, 0.7), 0.08)])

    @staticmethod
    def _window_mean(per_cell: np.ndarray, grid_h: int, grid_w: int) -> np.ndarray:
        """[..., cells] → the mean over each cell and its 8 neighbours (those inside the grid)."""
        planes = per_cell.reshape(-1, grid_h * grid_w)
        t = torch.from_numpy(planes.astype(np.float32)).reshape(1, len(planes), grid_h, grid_w)
        pooled = F.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)[0].reshape(len(planes), -1)
        return pooled.numpy().reshape(per_cell.shape)
