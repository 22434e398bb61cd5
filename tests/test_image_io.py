import io

import numpy as np
import pytest
from PIL import Image

from ntt_engine.image_io import ImageLoadError, bounded, load_image


def png_bytes(image: Image.Image, fmt="PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def rgb_image(h=20, w=30):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_path_bytes_array_and_pil_agree(tmp_path):
    array = rgb_image()
    path = tmp_path / "a.png"
    Image.fromarray(array).save(path)
    for source in (path, str(path), path.read_bytes(), array, Image.fromarray(array)):
        assert np.array_equal(load_image(source), array)


def test_grayscale_rgba_palette_and_16bit():
    gray = np.arange(200, dtype=np.uint8).reshape(10, 20)
    out = load_image(png_bytes(Image.fromarray(gray)))
    assert out.shape == (10, 20, 3) and np.array_equal(out[..., 0], gray)
    rgba = np.dstack([rgb_image(), np.full((20, 30), 7, np.uint8)])
    assert np.array_equal(load_image(png_bytes(Image.fromarray(rgba))), rgba[..., :3])
    assert load_image(png_bytes(Image.fromarray(rgb_image()).convert("P"))).shape == (20, 30, 3)
    sixteen = (np.arange(200, dtype=np.uint16).reshape(10, 20) * 300)
    out = load_image(png_bytes(Image.fromarray(sixteen)))
    assert out.dtype == np.uint8 and out.shape == (10, 20, 3)
    assert out[..., 0].max() == round(int(sixteen.max()) / 257) and out[0, 0, 0] == 0
    assert load_image(sixteen[..., None].repeat(3, 2)).max() == round(sixteen.max() / 257)


def test_exif_rotation_is_applied():
    array = rgb_image(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = png_bytes(Image.fromarray(array), "JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(data)
    assert out.shape == (30, 20, 3)


def test_corrupt_truncated_and_missing(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_image(b"not an image at all")
    jpeg = png_bytes(Image.fromarray(rgb_image(200, 200)), "JPEG")
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageLoadError, match="cannot open"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError):
        load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ImageLoadError):
        load_image(np.zeros((5, 5, 7), np.uint8))


def test_huge_image_refused_before_decoding():
    data = png_bytes(Image.new("1", (20000, 20000)))
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(data, max_pixels=40_000_000)
    data = png_bytes(Image.new("1", (8000, 8000)))  # below PIL's own bomb limit, above ours
    with pytest.raises(ImageLoadError, match="too large: 8000x8000"):
        load_image(data, max_pixels=40_000_000)


def test_bounded_resize_keeps_aspect():
    image, scale = bounded(rgb_image(100, 400), 200)
    assert image.shape == (50, 200, 3) and scale == 0.5
    same, scale = bounded(rgb_image(10, 10), 200)
    assert same.shape == (10, 10, 3) and scale == 1.0
