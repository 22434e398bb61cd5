"""Small pictures of what an annotation taught the memory, for the dashboard's gallery: each reference or negative
example drawn as its mask outlined on a crop of its image, and a negative image (no object) as a whole.

Rendered while the annotation is learnt (the image and the masks are at hand only then; the memory keeps feature
vectors, not pixels) and stored beside the project's memory (store/thumbnails.py)."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

SIZE = 96  # the longer side of a thumbnail, pixels
MARGIN = 0.25  # context around the object, as a fraction of its box's longer side
OUTLINE = (255, 215, 0)  # the mask's outline (gold: visible on most images)
PER_ANNOTATION = 8  # thumbnails kept per annotation (its first regions): the gallery shows a few per class anyway

REFERENCE, NEGATIVE, NEGATIVE_IMAGE = "reference", "negative", "negative image"


@dataclass(frozen=True)
class Thumbnail:
    label: str  # "" for a negative image
    kind: str  # REFERENCE, NEGATIVE (a predicted object the annotator deleted) or NEGATIVE_IMAGE
    png: bytes


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3]).astype(np.uint8, copy=False)


def _png(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    return out.getvalue()


def region_thumbnail(image: np.ndarray, mask: np.ndarray) -> bytes:
    """The object's mask outlined on a square crop around it, the longer side SIZE pixels."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise ValueError("an empty mask has no thumbnail")
    height, width = mask.shape
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    half = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()) * (1 + 2 * MARGIN) / 2
    y0, y1 = int(max(0, cy - half)), int(min(height, np.ceil(cy + half)))
    x0, x1 = int(max(0, cx - half)), int(min(width, np.ceil(cx + half)))
    crop = Image.fromarray(_rgb(image)[y0:y1, x0:x1])
    scale = SIZE / max(crop.size)
    size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    crop = crop.resize(size, Image.Resampling.BILINEAR)
    inside = Image.fromarray(mask[y0:y1, x0:x1].astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    eroded = inside.filter(ImageFilter.MinFilter(3))
    edge = (np.asarray(inside) > 0) & ~(np.asarray(eroded) > 0)
    pixels = np.array(crop)
    pixels[edge] = OUTLINE
    return _png(Image.fromarray(pixels))


def image_thumbnail(image: np.ndarray) -> bytes:
    """A whole image, the longer side SIZE pixels (a negative image: nothing to outline)."""
    picture = Image.fromarray(_rgb(image))
    picture.thumbnail((SIZE, SIZE), Image.Resampling.BILINEAR)
    return _png(picture)


def region_thumbnails(image: np.ndarray, references, negatives) -> list[Thumbnail]:
    """Thumbnails of an annotation's references then negatives (LabelledMask-like: .label, .mask), at most
    PER_ANNOTATION of them; a region that cannot be drawn is left out."""
    thumbnails = []
    for kind, regions in ((REFERENCE, references), (NEGATIVE, negatives)):
        for region in regions:
            if len(thumbnails) >= PER_ANNOTATION:
                return thumbnails
            if region.mask is not None and region.mask.any():
                thumbnails.append(Thumbnail(region.label, kind, region_thumbnail(image, region.mask)))
    return thumbnails
