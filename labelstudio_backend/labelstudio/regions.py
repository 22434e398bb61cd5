"""Label Studio result regions ⇄ masks and boxes, pixel-exact where the format allows.

Coordinates in Label Studio results are percent (0–100) of the original image, with (0, 0) at its top-left corner
(pixel edges, not centres); brush regions carry Label Studio's RLE of an RGBA image whose alpha channel is the mask.
Bad regions raise RegionError so the caller can skip them with a log line; nothing here crashes on user data.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from label_studio_sdk.converter import brush
from PIL import Image

from labelstudio_backend.labelstudio.brush_rle import BrushRleError, decode_brush_values
from labelstudio_backend.labelstudio.label_config import Control, LabelConfig
from ntt_engine.export import mask_to_polygons, polygons_to_mask
from ntt_engine.mask_frames import scale_mask

REGION_TYPES = ("brushlabels", "polygonlabels", "rectanglelabels")
# result types that mark an object on the image: an annotation with none of these is a negative (empty) one
GEOMETRY_TYPES = REGION_TYPES + ("keypointlabels", "ellipselabels", "brush", "polygon", "rectangle", "keypoint",
                                 "ellipse", "labels")
MAX_POLYGON_POINTS = 1000  # more makes the Label Studio editor sluggish; outlines above are simplified
_PERCENT_SLACK = 1e-6
MAX_BRUSH_SCALE = 4  # a brush region's original_width x original_height may be at most this x the image's pixels
MAX_BRUSH_ASPECT_ERROR = 0.02  # and its aspect ratio that of the image (or of the image turned 90°), within 2 %
MAX_BRUSH_RLE_BYTES = 4 * 1024 * 1024  # a hand-drawn mask of a 40 MP image takes a few hundred KB


class RegionError(ValueError):
    """A region that cannot be used (wrong RLE length, points outside the image, unknown label, ...)."""


@dataclass(frozen=True)
class Region:
    """One reference region in image pixels: a mask, or a box (xyxy) that SAM turns into a mask."""

    label: str
    control: str
    mask: np.ndarray | None = None  # [H, W] bool
    box: tuple[float, float, float, float] | None = None


# ------------------------------------------------------------------------------------------------ brush RLE
def encode_brush(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE of a mask: 0/255 in every RGBA channel, as the editor renders the alpha channel."""
    return brush.mask2rle(np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8))


def rle_header_length(rle: list[int]) -> int:
    """The value count N (= width · height · 4) stored in the first 32 bits of a brush RLE."""
    return int.from_bytes(bytes(rle[:4]), "big")


def decode_brush(rle: Any, width: int, height: int) -> np.ndarray:
    """Brush RLE → [height, width] bool (alpha ≥ 128). Checks the header against the size before decoding, so a
    wrong-sized or hostile RLE is refused without allocating its claimed length; the decoding itself is bounded
    (brush_rle.py)."""
    if not isinstance(rle, list) or len(rle) < 6:
        raise RegionError("brush rle must be a list of byte values (0..255)")
    expected = width * height * 4
    if len(rle) > min(expected // 2 + 64, MAX_BRUSH_RLE_BYTES):
        raise RegionError(f"brush rle of {len(rle)} bytes is implausibly long for a {width}x{height} image "
                          f"(at most {min(expected // 2 + 64, MAX_BRUSH_RLE_BYTES)})")
    if any(isinstance(v, bool) for v in rle[:64]):
        raise RegionError("brush rle must be a list of byte values (0..255)")
    try:
        data = bytes(rle)
    except (TypeError, ValueError):
        raise RegionError("brush rle must be a list of byte values (0..255)") from None
    claimed = rle_header_length(rle)
    if claimed != expected:
        raise RegionError(f"brush rle encodes {claimed} values, a {width}x{height} RGBA image has {expected}")
    try:
        values = decode_brush_values(data, expected)
    except BrushRleError as exc:
        raise RegionError(str(exc)) from None
    return values.reshape(height, width, 4)[:, :, 3] >= 128


# ------------------------------------------------------------------------------------------------ polygons
def polygon_to_mask(points: Any, width: int, height: int) -> np.ndarray:
    """Percent points [[x, y], ...] → [height, width] bool, rasterised by pycocotools (pixel-edge coordinates)."""
    if not isinstance(points, list) or len(points) < 3:
        raise RegionError("a polygon needs at least 3 points")
    flat: list[float] = []
    for point in points:
        if not isinstance(point, (list, tuple)) or len(point) < 2:
            raise RegionError(f"polygon point {point!r} is not [x, y]")
        x, y = percent(point[0], "x"), percent(point[1], "y")
        flat += [x * width / 100.0, y * height / 100.0]
    mask = polygons_to_mask([flat], height, width)
    if not mask.any():
        raise RegionError("the polygon covers no pixel")
    return mask


def mask_to_polygons_percent(mask: np.ndarray, min_fraction: float = 0.2) -> list[list[list[float]]]:
    """Mask → outer outlines as percent points, one per part whose area is ≥ `min_fraction` of the largest part
    (Label Studio polygons have no holes and one outline each)."""
    height, width = mask.shape
    polygons = [np.asarray(p, np.float64).reshape(-1, 2) for p in mask_to_polygons(mask)]
    if not polygons:
        return []
    areas = [abs(cv2.contourArea(p.astype(np.float32))) for p in polygons]
    largest = max(areas)
    out = []
    for points, area in sorted(zip(polygons, areas), key=lambda pa: -pa[1]):
        if area < min_fraction * largest or len(points) < 3:
            continue
        points = _simplify(points)
        out.append([[float(x) * 100.0 / width, float(y) * 100.0 / height] for x, y in points])
    return out


def _simplify(points: np.ndarray) -> np.ndarray:
    epsilon = 0.5
    while len(points) > MAX_POLYGON_POINTS:
        points = cv2.approxPolyDP(points.astype(np.float32).reshape(-1, 1, 2), epsilon, True).reshape(-1, 2)
        epsilon *= 2
    return points


# ------------------------------------------------------------------------------------------------ rectangles
def rectangle_to_box(value: dict, width: int, height: int) -> tuple[float, float, float, float]:
    """Percent x/y/width/height (+ rotation, degrees clockwise about the top-left corner) → pixel xyxy, the
    axis-aligned bounds of the rotated box, clipped to the image."""
    x, y = percent(value.get("x"), "x"), percent(value.get("y"), "y")
    w, h = percent(value.get("width"), "width"), percent(value.get("height"), "height")
    if w <= 0 or h <= 0:
        raise RegionError(f"rectangle of size {w}x{h} % is empty")
    x0, y0, bw, bh = x * width / 100.0, y * height / 100.0, w * width / 100.0, h * height / 100.0
    rotation = value.get("rotation") or 0
    if not isinstance(rotation, (int, float)) or not math.isfinite(rotation):
        raise RegionError(f"rectangle rotation {rotation!r} is not a number")
    corners = np.array([[0, 0], [bw, 0], [bw, bh], [0, bh]], np.float64)
    if rotation:
        angle = math.radians(rotation)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        corners = corners @ rot.T
    corners += [x0, y0]
    lo = np.clip(corners.min(0), 0, [width, height])
    hi = np.clip(corners.max(0), 0, [width, height])
    if rotation == 0 and (x + w > 100 + _PERCENT_SLACK or y + h > 100 + _PERCENT_SLACK):
        raise RegionError(f"rectangle x+width={x + w:.3f} % or y+height={y + h:.3f} % is outside the image")
    if hi[0] - lo[0] <= 0 or hi[1] - lo[1] <= 0:
        raise RegionError("rectangle lies outside the image")
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def box_to_rectangle(bbox_xywh: tuple[float, float, float, float], width: int, height: int) -> dict:
    x, y, w, h = bbox_xywh
    return {"x": x * 100.0 / width, "y": y * 100.0 / height, "width": w * 100.0 / width,
            "height": h * 100.0 / height, "rotation": 0}


def percent(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RegionError(f"{what}={value!r} is not a number")
    if not -_PERCENT_SLACK <= value <= 100 + _PERCENT_SLACK:
        raise RegionError(f"{what}={value} is outside 0–100 %")
    return min(max(float(value), 0.0), 100.0)


# ------------------------------------------------------------------------------------------------ LS → engine
def region_label(item: dict, config: LabelConfig) -> str:
    labels = (item.get("value") or {}).get(item.get("type"))
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        raise RegionError(f"{item.get('type')} region has no label")
    label = labels[0]
    if label not in config.labels:
        raise RegionError(f"label {label!r} is not in the label config (known: {sorted(config.labels)})")
    return label


def parse_region(item: dict, config: LabelConfig, image_size: tuple[int, int]) -> Region:
    """One result item → Region in the pixels of the loaded image (`image_size` = (H, W))."""
    kind = item.get("type")
    if kind not in REGION_TYPES:
        raise RegionError(f"region type {kind!r} is not used for references")
    value = item.get("value")
    if not isinstance(value, dict):
        raise RegionError("region has no value")
    label = region_label(item, config)
    control = _served_control(item, config)
    if label not in control.labels:
        raise RegionError(f"label {label!r} is not a label of {control.tag} {control.name!r}")
    control = control.name
    height, width = image_size
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle":
            raise RegionError(f"brush format {value.get('format')!r} is not rle")
        ow, oh = item.get("original_width"), item.get("original_height")
        if not (isinstance(ow, int) and isinstance(oh, int) and ow > 0 and oh > 0):
            raise RegionError("brush region lacks original_width/original_height")
        if ow * oh > MAX_BRUSH_SCALE * width * height:
            # decoding allocates original_width x original_height x 4 bytes: a small RLE claiming a huge canvas
            # would be a memory bomb, so the claimed size must be that of the image (rotated or rescaled a little)
            raise RegionError(f"brush region claims a {ow}x{oh} image, the task's image is {width}x{height}")
        mask = decode_brush(value.get("rle"), ow, oh)
        if not _same_aspect(ow, oh, width, height):  # a canvas of another shape would be stretched onto the image
            raise RegionError(f"brush region claims a {ow}x{oh} image, the task's image is {width}x{height}")
        if (oh, ow) != (height, width):  # e.g. an EXIF-rotated file: map the mask onto the loaded image
            mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))
        if not mask.any():
            raise RegionError("brush mask is empty")
        return Region(label, control, mask=mask)
    if kind == "polygonlabels":
        return Region(label, control, mask=polygon_to_mask(value.get("points"), width, height))
    return Region(label, control, box=rectangle_to_box(value, width, height))


def _served_control(item: dict, config: LabelConfig) -> Control:
    """The config's control that drew this region, on the served <Image>: regions of another image or of a control
    the config does not have would otherwise be pooled on this image."""
    from_name, to_name = item.get("from_name"), item.get("to_name")
    control = config.control(from_name) if isinstance(from_name, str) else None
    if control is None:
        raise RegionError(f"from_name {from_name!r} is not a control of image {config.image_name!r} in the label "
                          f"config (known: {sorted(c.name for c in config.controls)})")
    if to_name != config.image_name:
        raise RegionError(f"to_name {to_name!r} is not the served image {config.image_name!r}")
    if control.type != item.get("type"):
        raise RegionError(f"a {item.get('type')} region cannot come from {control.tag} {control.name!r}")
    return control


def _same_aspect(ow: int, oh: int, width: int, height: int) -> bool:
    """True when ow:oh is width:height, or height:width (an EXIF-rotated image), within MAX_BRUSH_ASPECT_ERROR or
    one pixel of rounding."""
    for w, h in ((width, height), (height, width)):
        if abs(ow * h - oh * w) <= MAX_BRUSH_ASPECT_ERROR * ow * h + max(w, h):
            return True
    return False


def geometry_items(result: Any) -> list[dict]:
    """The items of an annotation's result that mark the image; none means the annotation is a negative."""
    return [item for item in (result if isinstance(result, list) else [])
            if isinstance(item, dict) and item.get("type") in GEOMETRY_TYPES]


def parse_result(result: Any, config: LabelConfig, image_size: tuple[int, int]
                 ) -> tuple[list[tuple[dict, Region]], list[str]]:
    """An annotation's result → (item, Region) for each usable region, and why each other one was skipped."""
    parsed, skipped = [], []
    for index, item in enumerate(geometry_items(result)):
        if item.get("type") not in REGION_TYPES:
            skipped.append(f"region {index}: type {item.get('type')!r} is not a reference type")
            continue
        try:
            parsed.append((item, parse_region(item, config, image_size)))
        except RegionError as exc:
            skipped.append(f"region {index} ({item.get('from_name')}/{item.get('type')}): {exc}")
    return parsed, skipped


# ------------------------------------------------------------------------------------------------ engine → LS
def _base(control: Control, width: int, height: int, score: float) -> dict:
    return {"id": uuid.uuid4().hex[:10], "from_name": control.name, "to_name": control.to_name, "type": control.type,
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "score": round(float(score), 4), "readonly": False}


def brush_region(control: Control, label: str, mask: np.ndarray, score: float,
                 image_size: tuple[int, int] | None = None) -> dict:
    """`mask` covers the whole image at any size; the brush is drawn in `image_size`'s pixels (default: its own)."""
    height, width = image_size or mask.shape
    return {**_base(control, width, height, score),
            "value": {"format": "rle", "rle": encode_brush(scale_mask(mask, (height, width))), "brushlabels": [label]}}


def polygon_regions(control: Control, label: str, mask: np.ndarray, score: float,
                    image_size: tuple[int, int] | None = None) -> list[dict]:
    """Outlines of `mask` (covering the whole image at any size) in percent; `image_size` names the original."""
    height, width = image_size or mask.shape
    return [{**_base(control, width, height, score),
             "value": {"points": points, "closed": True, "polygonlabels": [label]}}
            for points in mask_to_polygons_percent(mask)]


def rectangle_region(control: Control, label: str, bbox_xywh: tuple[float, float, float, float],
                     image_size: tuple[int, int], score: float) -> dict:
    height, width = image_size
    return {**_base(control, width, height, score),
            "value": {**box_to_rectangle(bbox_xywh, width, height), "rectanglelabels": [label]}}


def note_region(control: Control, text: str) -> dict:
    """A task-level text in the config's note TextArea: what the annotator sees of a prediction without regions."""
    return {"id": "ntt-note", "from_name": control.name, "to_name": control.to_name, "type": "textarea",
            "value": {"text": [text]}, "readonly": False}


def instance_regions(control: Control, label: str, mask: np.ndarray, bbox_xywh: tuple[float, float, float, float],
                     score: float, image_size: tuple[int, int] | None = None) -> list[dict]:
    """The result regions of one instance for one output control. `mask` may be at the engine's working size;
    `image_size` (default: the mask's) is the original's, in whose pixels `bbox_xywh` is."""
    size = image_size or mask.shape
    if control.tag == "BrushLabels":
        return [brush_region(control, label, mask, score, size)]
    if control.tag == "PolygonLabels":
        return polygon_regions(control, label, mask, score, size)
    return [rectangle_region(control, label, bbox_xywh, size, score)]
