"""Stage `export`: masks → COCO RLE, polygons and boxes (pycocotools does the RLE)."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def mask_to_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """COCO xywh covering exactly the mask's pixels (a single pixel at (x, y) gives (x, y, 1, 1))."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    y0, y1, x0, x1 = rows[0], rows[-1], cols[0], cols[-1]
    return (float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1))


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE with `counts` as str (json-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    rle = dict(rle)
    if isinstance(rle.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    elif isinstance(rle.get("counts"), str):
        rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    if not polygons:
        return np.zeros((height, width), bool)
    rles = mask_utils.frPyObjects([p for p in polygons if len(p) >= 6], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool) if rles else np.zeros((height, width), bool)


def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """Outer contours as COCO polygons [x0, y0, x1, y1, ...] in pixel-edge coordinates.

    Polygons cannot express holes: a mask with holes is exported by its outer outline (use RLE when holes matter;
    `has_holes` tells). Contours are traced on a 2× upsampled mask so the outline follows pixel edges, which makes
    polygon → mask round trips close to exact instead of losing half a pixel all round.
    """
    upsampled = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64)
        if len(points) < min_points:
            # a 1-pixel-wide line or a single pixel: fall back to its box outline
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
        # the 2× contour runs through upsampled pixel centres; map them onto original pixel edges
        points = (points + 0.5) / 2.0
        points = np.round(points * 2) / 2
        polygons.append(points.reshape(-1).tolist())
    return polygons


def has_holes(mask: np.ndarray) -> bool:
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())
