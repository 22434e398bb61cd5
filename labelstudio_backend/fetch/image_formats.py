"""Which image formats a task image may be: the raster formats Label Studio shows. Pillow would otherwise try every
plugin it has, EPS among them, which runs Ghostscript where it is installed, on attacker-supplied PostScript."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ntt_engine import ImageLoadError

ALLOWED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")  # MPO: phone JPEGs with a depth map


def check_image_format(source: bytes | Path) -> None:
    """Raise ImageLoadError unless `source` is one of ALLOWED_FORMATS. Only the header is read: Pillow's open() is
    lazy, and with `formats` it never hands the file to another plugin."""
    Image.init()  # registers every plugin: `formats` may only name registered ones
    formats = [name for name in ALLOWED_FORMATS if name in Image.OPEN]
    stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    with stream, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_image applies the pixel limit
        try:
            with Image.open(stream, formats=formats):
                return
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(f"image is too large ({exc})") from None
        except UnidentifiedImageError:
            raise ImageLoadError(f"cannot decode image: not an allowed image format "
                                 f"({', '.join(ALLOWED_FORMATS)})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageLoadError(f"cannot decode image: {exc}") from exc
