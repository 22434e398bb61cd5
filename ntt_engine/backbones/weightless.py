"""Weightless TEST backbones: deterministic stand-ins for DINOv2 and SAM2, for logic tests on generated images.

They are *not* models of anything and must never be used for real labelling. They look only at the pixels of the
image they are given (no ground truth, no knowledge of the generator's palette) and are designed for the kind of
images `ntt_engine.synthetic` draws: flat-hued textured objects on a low-saturation background.

- `ColourTextureEncoder` ("test-colour-texture-v1"): a `FeatureEncoder` whose cell features are a soft hue
  histogram (weighted by how chromatic the pixels are), an achromatic brightness histogram, and local gradient
  orientation statistics (texture), all non-negative.
- `ColourTextureEncoder(fine_texture=True)` ("test-colour-texture-v2"): the same plus how much of a window is dark
  and how much of it is edge, with texture weighted as much as colour, so that two textures of one hue (stripes vs
  waves, dots vs rings, checker vs grid) are told apart, as DINOv2 tells them apart. The labelling-effort benchmark
  uses it (look-alikes of a class's exact hue); the `synthetic` preset keeps v1.
- `ConnectedComponentProposer` ("test-connected-components-v2"): a `ProposalGenerator` that splits the image into
  connected regions of one hue (chromatic pixels whose neighbours differ by < `hue_tolerance` degrees) or of
  achromatic pixels, and answers every click with the region under it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..types import PatchFeatures, PromptSet, Proposals

__all__ = ["ColourTextureEncoder", "ComponentMap", "ConnectedComponentProposer", "connected_components",
           "hsv_planes"]


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


def _chromatic_weight(saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """≈1 for clearly coloured pixels, ≈0 for greys (hue meaningless); a soft ramp between."""
    return np.clip((saturation - 0.25) / 0.2, 0, 1) * np.clip((value - 0.12) / 0.13, 0, 1)


# ------------------------------------------------------------------------------------------------ encoder


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
        chromatic = _chromatic_weight(sat, val)
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


# ------------------------------------------------------------------------------------------------ proposer


def connected_components(same_right: np.ndarray, same_down: np.ndarray) -> np.ndarray:
    """4-connected components of an H×W pixel graph → labels [H, W] int32 in 0..n-1, numbered in raster order.

    `same_right[y, x]` ([H, W-1]) links (y, x)–(y, x+1); `same_down[y, x]` ([H-1, W]) links (y, x)–(y+1, x).
    Vectorised union-find (hook roots onto the smaller root, then pointer jumping), no SciPy needed.
    """
    height = same_down.shape[0] + 1
    width = same_right.shape[1] + 1
    index = np.arange(height * width, dtype=np.int64).reshape(height, width)
    a = np.concatenate([index[:, :-1][same_right], index[:-1, :][same_down]])
    b = np.concatenate([index[:, 1:][same_right], index[1:, :][same_down]])
    parent = np.arange(height * width, dtype=np.int64)
    while a.size:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        if not a.size:
            break
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    _, labels = np.unique(parent, return_inverse=True)
    return labels.reshape(height, width).astype(np.int32)


@dataclass(frozen=True)
class ComponentMap:
    """`ConnectedComponentProposer.embed` output: the region partition of one image."""

    labels: np.ndarray  # [H, W] int32 component id per pixel
    areas: np.ndarray  # [n] int64 pixels per component
    quality: np.ndarray  # [n] float32 the proposer's confidence per component
    chromatic: np.ndarray  # [n] bool: a coloured region (False: grey, background-like)
    image_size: tuple[int, int]
    resolution: tuple[int, int]  # (h, w) of the output masks
    rows: np.ndarray  # [h] source pixel row of each output row (nearest, pixel centres)
    cols: np.ndarray  # [w]

    @property
    def count(self) -> int:
        return int(self.areas.shape[0])

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.labels, self.areas, self.quality, self.chromatic, self.rows, self.cols))

    def resample(self, mask: np.ndarray) -> np.ndarray:
        """A full-resolution [.., H, W] array → the output resolution (nearest at output pixel centres)."""
        return mask[..., self.rows[:, None], self.cols[None, :]]


class ConnectedComponentProposer:
    """TEST `ProposalGenerator` "test-connected-components-v2": one region per click, no weights.

    `embed` partitions the image into 4-connected regions: neighbouring chromatic pixels join when their hues differ
    by less than `hue_tolerance` degrees (the bright and dark shades of a textured object share one hue, so stripes,
    checkers and dots stay one region without smoothing), and neighbouring grey pixels join each other. Different
    hues and grey/colour boundaries separate regions.

    Quality (SAM's predicted-IoU stand-in): `tiny_quality` for regions under `min_area` pixels, `background_quality`
    for regions larger than `max_fraction` of the image and for grey regions, otherwise 0.75–0.95 growing with how
    much of its bounding box the region fills. Masks are logits (+1 inside, −1 outside) at `resolution` (h, w), or at
    the image's own size when None, squashed so that no side exceeds `max_side` (as SAM2's 256² logits: a proposal
    costs the same memory on a large image); they always cover the whole image.
    """

    def __init__(self, resolution: int | tuple[int, int] | None = None, hue_tolerance: float = 8.0,
                 min_area: int = 20, max_fraction: float = 0.4, tiny_quality: float = 0.1,
                 background_quality: float = 0.25, max_side: int = 512):
        if isinstance(resolution, int):
            resolution = (resolution, resolution)
        self.resolution = None if resolution is None else (int(resolution[0]), int(resolution[1]))
        self.hue_tolerance = float(hue_tolerance)
        self.min_area = int(min_area)
        self.max_fraction = float(max_fraction)
        self.tiny_quality = float(tiny_quality)
        self.background_quality = float(background_quality)
        self.max_side = int(max_side)
        suffix = "" if self.resolution is None else f"-{self.resolution[0]}x{self.resolution[1]}"
        self.name = "test-connected-components-v2" + suffix  # v2: masks of large images at most max_side

    def __repr__(self) -> str:
        return f"ConnectedComponentProposer(resolution={self.resolution}) [TEST backbone]"

    # --- embedding ---
    def embed(self, image: np.ndarray) -> ComponentMap:
        if image.ndim != 3 or image.shape[2] < 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        height, width = int(image.shape[0]), int(image.shape[1])
        hue, sat, val = hsv_planes(image)
        chromatic = _chromatic_weight(sat, val) > 0.5

        def linked(p: tuple[slice, slice], q: tuple[slice, slice]) -> np.ndarray:
            hue_gap = np.abs((hue[p] - hue[q] + 180.0) % 360.0 - 180.0)
            both_colour = chromatic[p] & chromatic[q] & (hue_gap < self.hue_tolerance)
            return both_colour | (~chromatic[p] & ~chromatic[q])

        everything = slice(None)
        same_right = linked((everything, slice(None, -1)), (everything, slice(1, None)))
        same_down = linked((slice(None, -1), everything), (slice(1, None), everything))
        labels = connected_components(same_right, same_down)

        flat = labels.ravel()
        count = int(flat.max()) + 1
        areas = np.bincount(flat, minlength=count)
        colour_share = np.bincount(flat, weights=chromatic.ravel().astype(np.float64), minlength=count) / areas
        is_colour = colour_share > 0.5
        ys, xs = np.divmod(np.arange(flat.size), width)
        x0 = np.full(count, width, np.int64)
        y0 = np.full(count, height, np.int64)
        x1 = np.zeros(count, np.int64)
        y1 = np.zeros(count, np.int64)
        np.minimum.at(x0, flat, xs)
        np.minimum.at(y0, flat, ys)
        np.maximum.at(x1, flat, xs)
        np.maximum.at(y1, flat, ys)
        fill = areas / ((x1 - x0 + 1) * (y1 - y0 + 1))
        quality = 0.75 + 0.2 * np.clip(fill / 0.6, 0.0, 1.0)
        quality = np.where(~is_colour | (areas > self.max_fraction * height * width), self.background_quality,
                           quality)
        quality = np.where(areas < self.min_area, self.tiny_quality, quality)

        out_h, out_w = self.resolution or (min(height, self.max_side), min(width, self.max_side))
        rows = np.minimum(((np.arange(out_h) + 0.5) * height / out_h).astype(np.int64), height - 1)
        cols = np.minimum(((np.arange(out_w) + 0.5) * width / out_w).astype(np.int64), width - 1)
        return ComponentMap(labels, areas.astype(np.int64), quality.astype(np.float32), is_colour,
                            (height, width), (out_h, out_w), rows, cols)

    # --- decoding ---
    @staticmethod
    def _pixel(embedding: ComponentMap, points_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = embedding.image_size
        pts = np.asarray(points_xy, np.float64).reshape(-1, 2)
        xs = np.clip(np.floor(pts[:, 0]), 0, width - 1).astype(np.int64)
        ys = np.clip(np.floor(pts[:, 1]), 0, height - 1).astype(np.int64)
        return xs, ys

    @staticmethod
    def _logits(masks: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(masks.astype(np.float32) * 2.0 - 1.0)

    def propose(self, embedding: ComponentMap, points_xy: np.ndarray, min_quality: float | None = None) -> Proposals:
        xs, ys = self._pixel(embedding, points_xy)
        kept = None
        if min_quality is not None:  # drop low-quality regions before building their masks, as SAM2's path does
            kept = np.flatnonzero(embedding.quality[embedding.labels[ys, xs]] > min_quality)
            xs, ys = xs[kept], ys[kept]
        if xs.size == 0:
            return Proposals.empty(embedding.image_size, embedding.resolution)
        ids = embedding.labels[ys, xs]
        unique, inverse = np.unique(ids, return_inverse=True)  # many clicks share a region: build each once
        small = embedding.resample(embedding.labels)
        distinct = np.where(small[None] == unique[:, None, None], np.float32(1.0), np.float32(-1.0))
        logits = torch.from_numpy(np.take(distinct, inverse.reshape(-1), axis=0))
        prompt_index = None if kept is None else torch.from_numpy(kept)
        return Proposals(logits, torch.from_numpy(embedding.quality[ids]), embedding.image_size, prompt_index)

    def segment(self, embedding: ComponentMap, prompts: PromptSet) -> Proposals:
        """Boxes: per box, the largest region lying mostly (≥ 50 %) inside it, cut to the box (else the region with
        the largest overlap). Points: the region of the first positive point minus the regions of negative points.
        No prompt at all gives zero proposals."""
        labels = embedding.labels
        height, width = embedding.image_size
        boxes = np.asarray(prompts.boxes, np.float64).reshape(-1, 4)
        masks: list[np.ndarray] = []
        quality: list[float] = []
        if len(boxes):
            for x0, y0, x1, y1 in boxes:
                c0, c1 = int(np.clip(np.floor(x0), 0, width)), int(np.clip(np.ceil(x1), 0, width))
                r0, r1 = int(np.clip(np.floor(y0), 0, height)), int(np.clip(np.ceil(y1), 0, height))
                mask = np.zeros((height, width), bool)
                if c1 <= c0 or r1 <= r0:
                    masks.append(mask)
                    quality.append(0.0)
                    continue
                inside = np.bincount(labels[r0:r1, c0:c1].ravel(), minlength=embedding.count)
                mostly = (inside >= 0.5 * embedding.areas) & (inside > 0)
                candidates = np.nonzero(mostly)[0] if mostly.any() else np.nonzero(inside)[0]
                best = int(candidates[np.argmax(inside[candidates])])
                mask[r0:r1, c0:c1] = labels[r0:r1, c0:c1] == best
                masks.append(mask)
                quality.append(float(embedding.quality[best]))
        else:
            points = np.asarray(prompts.points, np.float64).reshape(-1, 2)
            point_labels = np.asarray(prompts.point_labels).reshape(-1)
            if len(points) == 0:
                return Proposals.empty(embedding.image_size, embedding.resolution)
            xs, ys = self._pixel(embedding, points)
            ids = labels[ys, xs]
            positive = ids[point_labels == 1]
            mask = np.zeros((height, width), bool)
            q = 0.0
            if positive.size:
                first = int(positive[0])
                mask = labels == first
                negative = np.setdiff1d(ids[point_labels != 1], [first])
                if negative.size:
                    mask &= ~np.isin(labels, negative)
                q = float(embedding.quality[first])
            masks.append(mask)
            quality.append(q)
        stacked = embedding.resample(np.stack(masks))
        return Proposals(self._logits(stacked), torch.tensor(quality, dtype=torch.float32), embedding.image_size)
