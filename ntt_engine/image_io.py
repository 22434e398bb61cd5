"""Stage `load`: anything image-like → RGB uint8 [H, W, 3], with EXIF orientation and size limits."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

ImageSource = Union[str, Path, bytes, np.ndarray, Image.Image]


class ImageLoadError(ValueError):
    """The input is not a readable image; the message says which and why."""


def load_image(source: ImageSource, max_pixels: int = 100_000_000) -> np.ndarray:
    """Decode `source` to RGB uint8. Grayscale, palette, RGBA (alpha dropped) and 16-bit inputs are converted.

    Images above `max_pixels` are refused before decoding, so a decompression bomb never allocates its pixels.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, "<PIL image>", max_pixels)
    what = f"{source}" if isinstance(source, (str, Path)) else f"<{len(source)} bytes>"
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as exc:
        raise ImageLoadError(f"cannot open image {what}: {exc.strerror or exc}") from exc
    with stream:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(stream)
                return _pil_to_rgb(image, what, max_pixels)
        except ImageLoadError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageLoadError(f"image {what} is too large ({exc}); the limit is {max_pixels} pixels") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageLoadError(f"cannot decode image {what}: {exc}") from exc


def _pil_to_rgb(image: Image.Image, what: str, max_pixels: int) -> np.ndarray:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageLoadError(
            f"image {what} is too large: {width}x{height} = {width * height} pixels, above the limit of {max_pixels}; "
            "downscale it or raise max_image_pixels")
    image.load()  # decode fully now: a truncated file fails here, not later
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if data.max(initial=0) > 255 else 255.0
        image = Image.fromarray((data * (255.0 / peak)).round().clip(0, 255).astype(np.uint8))
    if image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8))
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageLoadError(f"expected an HxW, HxWx3 or HxWx4 array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(f"empty image array of shape {array.shape}")
    array = array[:, :, :3]
    if array.dtype == np.uint16:
        array = (array.astype(np.float64) / 257.0).round()
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
            array = array * 255.0
        array = array.clip(0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def bounded(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so that the longest side is at most `max_side`; returns the image and the scale applied."""
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)), scale
