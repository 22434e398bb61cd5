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
from ntt_engine.synthetic.hard import LOOK_ALIKE_HUE_SHIFT, SMALL_SIZE, look_alike


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
    for info in data["images"]:
        image = np.asarray(Image.open(root / "images" / info["file_name"]).convert("RGB"))
        hue, sat, _ = hsv_planes(image)
        annotated = np.zeros(image.shape[:2], bool)
        for ann in (a for a in data["annotations"] if a["image_id"] == info["id"]):
            annotated |= mask_utils.decode({"size": ann["segmentation"]["size"],
                                            "counts": ann["segmentation"]["counts"].encode()}).astype(bool)
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
