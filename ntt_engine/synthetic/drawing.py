"""Drawing primitives of the generated datasets: class appearances (hue, texture), the textured background, shapes,
placement with controlled occlusion, and painting. `draw` turns a list of (appearance, category) into an RGB image and
the visible mask of every class instance; easy.py and hard.py choose what to draw."""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

MAX_CLASSES = 8
MIN_VISIBLE_PIXELS = 64
MIN_VISIBLE_FRACTION = 0.3
_MIN_DRAWN_PIXELS = 150
_PLACEMENT_ATTEMPTS = 30
_TOUCH_MARGIN = 2  # pixels between two instances of the same class
_RADIUS = (0.07, 0.2)  # object radius, fraction of the image's shorter side


@dataclass(frozen=True)
class Appearance:
    """A (hue, texture) pair: one object class, or one distractor kind."""

    colour: str
    hue: float  # degrees
    texture: str

    @property
    def name(self) -> str:
        return f"{self.colour}_{self.texture}"


# Hues at least ~30° apart from each other, including the distractors' hues.
CLASS_APPEARANCES: tuple[Appearance, ...] = (
    Appearance("red", 0.0, "stripes"),
    Appearance("green", 120.0, "checker"),
    Appearance("blue", 225.0, "dots"),
    Appearance("yellow", 60.0, "solid"),
    Appearance("purple", 275.0, "grid"),
    Appearance("orange", 30.0, "waves"),
    Appearance("cyan", 185.0, "diagonal"),
    Appearance("magenta", 318.0, "rings"),
)
# Used only for distractors (never a class), together with the class appearances a dataset leaves unused.
DISTRACTOR_APPEARANCES: tuple[Appearance, ...] = (
    Appearance("lime", 91.0, "rings"),
    Appearance("teal", 152.0, "solid"),
)


def class_appearances(classes: int) -> tuple[Appearance, ...]:
    if not 1 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be between 1 and {MAX_CLASSES}, got {classes}")
    return CLASS_APPEARANCES[:classes]


# ------------------------------------------------------------------------------------------------ rendering helpers


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-saturation grey with a gradient, blotchy low-frequency noise and fine grain; float [H, W, 3] in 0..255."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / max(height, width)
    ramp -= ramp.mean()
    level = rng.uniform(100, 160) + rng.uniform(15, 45) * ramp
    coarse = rng.normal(0, 1, size=(height // 24 + 2, width // 24 + 2)).astype(np.float32)
    coarse_img = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    level = level + rng.uniform(6, 14) * np.asarray(coarse_img, np.float32)
    level = level + rng.normal(0, 4, size=(height, width)).astype(np.float32)
    level = np.clip(level, 70, 215)
    tint = rng.uniform(-5, 5, size=3).astype(np.float32)
    return level[..., None] + tint


def _polygon(rng: np.random.Generator, cx: float, cy: float, radius: float) -> tuple[str, list[tuple[float, float]]]:
    shape = ("ellipse", "rectangle", "blob")[int(rng.integers(3))]
    rot = rng.uniform(0, np.pi)
    if shape == "ellipse":
        a, b = radius * rng.uniform(0.55, 1.0), radius * rng.uniform(0.45, 1.0)
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        px, py = a * np.cos(t), b * np.sin(t)
    elif shape == "rectangle":
        a, b = radius * rng.uniform(0.5, 0.95), radius * rng.uniform(0.4, 0.9)
        px, py = np.array([-a, a, a, -a]), np.array([-b, -b, b, b])
    else:
        n = int(rng.integers(7, 12))
        t = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n)
        r = radius * rng.uniform(0.6, 1.0, n)
        px, py = r * np.cos(t), r * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    xs, ys = cx + c * px - s * py, cy + s * px + c * py
    return shape, list(zip(xs.tolist(), ys.tolist()))


def _rasterise(points: list[tuple[float, float]], height: int, width: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    padded = np.pad(mask, radius)
    height, width = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= padded[radius + dy: radius + dy + height, radius + dx: radius + dx + width]
    return out


def _texture_pattern(rng: np.random.Generator, texture: str, xx: np.ndarray, yy: np.ndarray,
                     cx: float, cy: float) -> np.ndarray:
    """Which pixels take the dark shade (bool), in image coordinates `xx`, `yy` of the object's box."""
    jitter = rng.uniform(0.9, 1.1)
    phase = rng.uniform(0, 1)
    theta = np.deg2rad(rng.uniform(-8, 8))
    x, y = xx - cx, yy - cy
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    if texture == "solid":
        return np.zeros(xx.shape, bool)
    if texture == "stripes":  # vertical bands, half duty
        period = 8.0 * jitter
        return ((u / period + phase) % 1.0) < 0.5
    if texture == "diagonal":  # thin 45° bands
        period = 7.0 * jitter
        d = (u + v) / math.sqrt(2)
        return ((d / period + phase) % 1.0) < 0.4
    if texture == "checker":
        period = 6.0 * jitter
        return ((np.floor(u / period + phase) + np.floor(v / period + phase)) % 2) == 1
    if texture == "dots":
        period = 8.0 * jitter
        du = ((u / period + phase) % 1.0 - 0.5) * period
        dv = ((v / period + phase) % 1.0 - 0.5) * period
        return du * du + dv * dv < (0.3 * period) ** 2
    if texture == "grid":
        period = 8.0 * jitter
        return (((u / period + phase) % 1.0) < 0.25) | (((v / period + phase) % 1.0) < 0.25)
    if texture == "waves":  # horizontal sinusoidal bands
        period = 8.0 * jitter
        w = v + 2.5 * np.sin(2 * np.pi * u / (20.0 * jitter))
        return ((w / period + phase) % 1.0) < 0.5
    if texture == "rings":
        period = 7.0 * jitter
        r = np.sqrt(x * x + y * y)
        return ((r / period + phase) % 1.0) < 0.5
    raise ValueError(f"unknown texture {texture!r}")


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, look: Appearance,
           cx: float, cy: float) -> None:
    """Fill `mask` in `image` (float RGB 0..255) with the appearance's texture, with per-instance jitter."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    hue = (look.hue + rng.uniform(-3, 3)) % 360.0
    bright = np.array(colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(0.75, 0.85), rng.uniform(0.88, 0.97)), np.float32)
    dark = np.array(colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(0.85, 0.95), rng.uniform(0.52, 0.6)), np.float32)
    dark_px = _texture_pattern(rng, look.texture, xx, yy, cx, cy)
    colour = np.where(dark_px[..., None], dark, bright) * 255.0
    shade = 1.0 + rng.normal(0, 0.015, size=dark_px.shape).astype(np.float32)  # grain that keeps the hue
    colour = colour * shade[..., None]
    local = mask[y0:y1, x0:x1]
    image[y0:y1, x0:x1][local] = colour[local]


# ------------------------------------------------------------------------------------------------ one image


@dataclass
class _Object:
    mask: np.ndarray  # drawn pixels inside the image
    look: Appearance
    category_id: int | None  # None: distractor
    shape: str
    cx: float
    cy: float


def _make_object(rng: np.random.Generator, look: Appearance, category_id: int | None,
                 height: int, width: int, radius_range: tuple[float, float] = _RADIUS) -> _Object | None:
    radius = min(height, width) * rng.uniform(*radius_range)
    margin = 0.3 * radius
    cx = rng.uniform(margin, width - margin)
    cy = rng.uniform(margin, height - margin)
    shape, points = _polygon(rng, cx, cy, radius)
    mask = _rasterise(points, height, width)
    if mask.sum() < _MIN_DRAWN_PIXELS:
        return None
    return _Object(mask, look, category_id, shape, cx, cy)


def _compose(rng: np.random.Generator, kinds: list[tuple[Appearance, int | None]], height: int,
             width: int, radius_ranges: Sequence[tuple[float, float]] | None = None,
             apart: Callable[[_Object], object] = lambda obj: obj.category_id) -> list[_Object]:
    """Place objects one by one (later ones on top), rejecting placements that break the visibility rules.
    Two objects with the same non-None `apart` key never touch (default: instances of one class)."""
    placed: list[_Object] = []
    owner = np.full((height, width), -1, np.int32)
    for k, (look, category_id) in enumerate(kinds):
        for _ in range(_PLACEMENT_ATTEMPTS):
            obj = _make_object(rng, look, category_id, height, width, radius_ranges[k] if radius_ranges else _RADIUS)
            if obj is None:
                continue
            if apart(obj) is not None:
                same = [i for i, p in enumerate(placed) if apart(p) == apart(obj)]
                if same and np.isin(owner[_dilate(obj.mask, _TOUCH_MARGIN)], same).any():
                    continue
            new_owner = np.where(obj.mask, len(placed), owner)
            visible = np.bincount(new_owner[new_owner >= 0].ravel(), minlength=len(placed) + 1)
            ok = all(
                p.category_id is None
                or (visible[i] >= MIN_VISIBLE_PIXELS and visible[i] >= MIN_VISIBLE_FRACTION * p.mask.sum())
                for i, p in enumerate(placed)
            )
            if ok:
                placed.append(obj)
                owner = new_owner
                break
    return placed


def draw(rng: np.random.Generator, kinds: list[tuple[Appearance, int | None]], height: int, width: int,
         **compose_options) -> tuple[np.ndarray, list[tuple[int, np.ndarray, int]]]:
    """Background, placement (`_compose` options), painting → the image and its class instances' visible masks."""
    image = _background(rng, height, width)
    objects = _compose(rng, kinds, height, width, **compose_options)
    owner = np.full((height, width), -1, np.int32)
    for i, obj in enumerate(objects):
        owner[obj.mask] = i
    # Safety net (placement already guarantees it): drop mostly hidden instances and do not draw them at all.
    keep = [
        obj for i, obj in enumerate(objects)
        if obj.category_id is None
        or ((owner == i).sum() >= MIN_VISIBLE_PIXELS and (owner == i).sum() >= MIN_VISIBLE_FRACTION * obj.mask.sum())
    ]
    owner[:] = -1
    for i, obj in enumerate(keep):
        owner[obj.mask] = i
        _paint(rng, image, obj.mask, obj.look, obj.cx, obj.cy)
    rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    instances = [(obj.category_id, owner == i, int(obj.mask.sum())) for i, obj in enumerate(keep)
                 if obj.category_id is not None]
    return rgb, instances
