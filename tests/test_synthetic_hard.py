"""The `hard` difficulty of the generated dataset, and that the default (`easy`) set did not move by one pixel."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ntt_engine.backbones.weightless import hsv_planes
from ntt_engine.synthetic import CLASS_APPEARANCES, generate_dataset, main
from ntt_engine.synthetic.hard import LOOK_ALIKE_HUE_SHIFT, LOOK_ALIKE_TEXTURE, SMALL_SIZE, look_alike


def pixels_digest(root: Path) -> str:
    digest = hashlib.sha256((root / "instances.json").read_bytes())
    for path in sorted((root / "images").glob("*.png")):
        digest.update(path.name.encode())
        digest.update(np.asarray(Image.open(path)).tobytes())
    return digest.hexdigest()


def test_easy_default_is_unchanged(tmp_path):
    # digest of the set the generator wrote before the hard difficulty existed (same arguments)
    generate_dataset(tmp_path, 8, 4, 11, size=(160, 120), negative_fraction=0.25)
    assert pixels_digest(tmp_path) == "f5424065ea60d0494a8883be71e8511d04cf17c868fd4a2a027fd5247a5298ac"
    assert "difficulty" not in json.loads((tmp_path / "instances.json").read_text())["info"]["generator"]


def _hues_and_annotated(root: Path, data: dict):
    """Per image of a generated set: its hue and saturation planes, and the union of its annotated masks."""
    for info in data["images"]:
        image = np.asarray(Image.open(root / "images" / info["file_name"]).convert("RGB"))
        hue, sat, _ = hsv_planes(image)
        annotated = np.zeros(image.shape[:2], bool)
        for ann in (a for a in data["annotations"] if a["image_id"] == info["id"]):
            annotated |= mask_utils.decode({"size": ann["segmentation"]["size"],
                                            "counts": ann["segmentation"]["counts"].encode()}).astype(bool)
        yield hue, sat, annotated


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard")
    generate_dataset(root, 16, 3, 5, difficulty="hard")
    return root, json.loads((root / "instances.json").read_text())


def test_hard_set_is_recorded_and_deterministic(hard, tmp_path):
    root, data = hard
    assert data["info"]["generator"]["difficulty"] == "hard"
    generate_dataset(tmp_path, 16, 3, 5, difficulty="hard")
    assert pixels_digest(tmp_path) == pixels_digest(root)
    easy = tmp_path / "easy"
    generate_dataset(easy, 16, 3, 5)
    assert pixels_digest(easy) != pixels_digest(root)


def test_hard_set_has_look_alikes_small_objects_and_clutter(hard):
    root, data = hard
    looks = CLASS_APPEARANCES[:3]
    small_radius_area = np.pi * (SMALL_SIZE[1] * 240) ** 2
    areas = [a["area"] for a in data["annotations"]]
    assert sum(a < small_radius_area for a in areas) >= 0.2 * len(areas)  # small objects are common
    look_alike_pixels = 0
    for hue, sat, annotated in _hues_and_annotated(root, data):
        for look in looks:
            shifted = look_alike(look)
            assert shifted.hue == pytest.approx((look.hue + LOOK_ALIKE_HUE_SHIFT) % 360) and shifted.texture != \
                look.texture
            gap = np.abs((hue - shifted.hue + 180) % 360 - 180)
            look_alike_pixels += int(((gap < 2) & (sat > 0.6) & ~annotated).sum())
        chromatic_unannotated = (sat > 0.6) & ~annotated
        assert chromatic_unannotated.any()  # every hard image carries distractors (look-alikes or clutter)
    assert look_alike_pixels > 16 * 200  # look-alikes: class colour, never annotated
    per_image = len(data["annotations"]) / sum(1 for i in data["images"]
                                               if i["id"] not in data["info"]["generator"]["negative_image_ids"])
    assert per_image >= 3


def test_cli_difficulty_and_bad_value(tmp_path):
    assert main([str(tmp_path / "out"), "--images", "3", "--classes", "2", "--difficulty", "hard"]) == 0
    assert json.loads((tmp_path / "out" / "instances.json").read_text())["info"]["generator"]["difficulty"] == "hard"
    with pytest.raises(SystemExit):
        main([str(tmp_path / "bad"), "--difficulty", "extreme"])
    with pytest.raises(ValueError, match="difficulty"):
        generate_dataset(tmp_path / "bad2", 1, 1, 0, difficulty="extreme")


def test_default_hard_set_is_unchanged_by_the_shift_option(tmp_path):
    # digest of the hard set written before look_alike_shift existed (same arguments)
    generate_dataset(tmp_path, 6, 3, 5, difficulty="hard")
    assert pixels_digest(tmp_path) == "8d9edfb63d62b74e53599536315bd9426f42611dffaacc87b256be1233d2ee9c"
    assert "look_alike_shift" not in json.loads((tmp_path / "instances.json").read_text())["info"]["generator"]


@pytest.mark.parametrize("shift", [0.0, 4.0])
def test_look_alike_shift_sets_the_look_alikes_hue(tmp_path, shift):
    root = tmp_path / "set"
    generate_dataset(root, 6, 2, 3, difficulty="hard", look_alike_shift=shift)
    data = json.loads((root / "instances.json").read_text())
    assert data["info"]["generator"]["look_alike_shift"] == shift
    looks = CLASS_APPEARANCES[:2]
    assert [look_alike(look, shift).hue for look in looks] == [(look.hue + shift) % 360 for look in looks]
    outside = np.concatenate([hue[(sat > 0.6) & ~annotated] for hue, sat, annotated in _hues_and_annotated(root, data)])
    for look in looks:  # unannotated pixels of the class's colour, centred on its hue + shift (jitter ±3°)
        gap = (outside - look.hue + 180) % 360 - 180
        near = gap[np.abs(gap) < 12]
        assert len(near) > 500 and abs(float(np.median(near)) - shift) < 2.0


def test_look_alike_shift_is_checked(tmp_path):
    with pytest.raises(ValueError, match="hard difficulty only"):
        generate_dataset(tmp_path / "a", 1, 1, 0, look_alike_shift=0.0)
    with pytest.raises(ValueError, match="look_alike_shift"):
        generate_dataset(tmp_path / "b", 1, 1, 0, difficulty="hard", look_alike_shift=45.0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert main([str(tmp_path / "c"), "--images", "2", "--classes", "1", "--difficulty", "hard",
                 "--look-alike-shift", "0"]) == 0
    assert json.loads((tmp_path / "c" / "instances.json").read_text())["info"]["generator"]["look_alike_shift"] == 0


def _painted_object(texture: str, seed: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    from ntt_engine.synthetic.drawing import Appearance, _paint

    image = np.full((240, 320, 3), 128.0, np.float32)
    yy, xx = np.mgrid[:240, :320]
    mask = (yy - 120) ** 2 + (xx - 160) ** 2 < radius ** 2
    _paint(np.random.default_rng(seed), image, mask, Appearance("red", 0.0, texture), 160, 120)
    return image.clip(0, 255).astype(np.uint8), mask


def _pooled(encoder, texture: str, seed: int, radius: int = 45) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    image, mask = _painted_object(texture, seed, radius)
    grid = encoder.encode(image).grid
    weights = F.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], grid.shape[:2])[0, 0]
    vector = ((grid * weights[..., None]).sum((0, 1)) / weights.sum()).numpy()
    return vector / np.linalg.norm(vector)


@pytest.mark.parametrize("texture", ["stripes", "checker", "dots"])
def test_the_v2_test_encoder_tells_a_look_alikes_texture_from_its_class(texture):
    """Issue 17 #5: look-alikes of a class's exact hue differ by texture only; v1 cannot see it (its texture channels
    move a vector less than per-instance jitter), v2 can, as DINOv2 can."""
    from ntt_engine.backbones.weightless import ColourTextureEncoder

    other = LOOK_ALIKE_TEXTURE[texture]
    for encoder, tells_apart in ((ColourTextureEncoder(), False), (ColourTextureEncoder(fine_texture=True), True)):
        same = min(_pooled(encoder, texture, s) @ _pooled(encoder, texture, s + 10) for s in range(2))
        cross = max(_pooled(encoder, texture, s) @ _pooled(encoder, other, s + 10) for s in range(2))
        assert bool(same - cross > 0.15) == tells_apart, (encoder.name, same, cross)
    assert ColourTextureEncoder(fine_texture=True).name == "test-colour-texture-v2"
