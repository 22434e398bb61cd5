"""The weightless TEST proposer `ConnectedComponentProposer` (see the package's docstring)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...types import PromptSet, Proposals
from .colour import chromatic_weight, hsv_planes


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
        chromatic = chromatic_weight(sat, val) > 0.5

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
