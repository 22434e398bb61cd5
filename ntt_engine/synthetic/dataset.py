"""A whole generated dataset on disk: the images as PNGs and their COCO instances.json (RLE masks of the visible
parts, exact boxes, and each object's drawn area), written atomically; deterministic for a seed and arguments."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ntt_engine.export import mask_to_bbox, mask_to_rle
from ntt_engine.memory import atomic_write_bytes
from ntt_engine.synthetic.drawing import CLASS_APPEARANCES, DISTRACTOR_APPEARANCES, class_appearances
from ntt_engine.synthetic.easy import render_easy_image
from ntt_engine.synthetic.hard import LOOK_ALIKE_HUE_SHIFT, render_hard_image

DIFFICULTIES = ("easy", "hard")


def mask_to_annotation(mask: np.ndarray) -> dict:
    """COCO fields of one binary mask: RLE (counts as str), area = pixel count, bbox = exact extent (xywh)."""
    return {"segmentation": mask_to_rle(mask), "area": int(mask.sum()), "bbox": list(mask_to_bbox(mask)), "iscrowd": 0}


def generate_dataset(out_dir: str | Path, images: int, classes: int, seed: int,
                     size: tuple[int, int] = (320, 240), negative_fraction: float = 0.15,
                     progress: bool = False, difficulty: str = "easy",
                     look_alike_shift: float = LOOK_ALIKE_HUE_SHIFT) -> Path:
    """Write `images` PNGs to `out_dir/images` and their COCO annotations to `out_dir/instances.json`.

    `size` is (width, height). Exactly round(images · negative_fraction) images are negatives (no class object).
    `difficulty`: "easy" or "hard" (`ntt_engine.synthetic.hard`); `look_alike_shift`: the hard set's look-alikes'
    hue shift from their class (degrees, 0 = the class's exact hue). Returns the path of instances.json.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if not 0.0 <= look_alike_shift < 30.0:  # classes' hues are ~30° apart: beyond, a look-alike resembles another
        raise ValueError(f"look_alike_shift must be in [0, 30) degrees, got {look_alike_shift}")
    if look_alike_shift != LOOK_ALIKE_HUE_SHIFT and difficulty != "hard":
        raise ValueError("look_alike_shift applies to the hard difficulty only (the easy set has no look-alikes)")
    looks = class_appearances(classes)
    distractors = tuple(a for a in CLASS_APPEARANCES if a not in looks) + DISTRACTOR_APPEARANCES
    width, height = int(size[0]), int(size[1])
    if width < 32 or height < 32:
        raise ValueError(f"image size must be at least 32x32, got {width}x{height}")
    if images < 0 or not 0.0 <= negative_fraction <= 1.0:
        raise ValueError("images must be >= 0 and negative_fraction in [0, 1]")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)

    n_negative = int(round(images * negative_fraction))
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(images)
    negatives = set(order[:n_negative].tolist())

    coco_images, annotations = [], []
    indices = range(images)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synthetic images", unit="img")
    for index in indices:
        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        if difficulty == "hard":
            rgb, instances = render_hard_image(rng, index not in negatives, looks, distractors, height, width,
                                               look_alike_shift)
        else:
            rgb, instances = render_easy_image(rng, index not in negatives, looks, distractors, height, width)
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        Image.fromarray(rgb).save(out / "images" / file_name, compress_level=1)
        coco_images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for category_id, mask, drawn_area in instances:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                **mask_to_annotation(mask), "drawn_area": drawn_area})

    dataset = {
        "info": {
            "description": f"ntt-label synthetic dataset: {images} images, {classes} classes, seed {seed}",
            "version": "1",
            "image_root": "images",
            "generator": {"images": images, "classes": classes, "seed": seed, "size": [width, height],
                          "negative_fraction": negative_fraction,
                          "negative_image_ids": sorted(i + 1 for i in negatives),
                          **({"difficulty": difficulty} if difficulty != "easy" else {}),
                          **({"look_alike_shift": look_alike_shift}
                             if look_alike_shift != LOOK_ALIKE_HUE_SHIFT else {})},
        },
        "licenses": [],
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": look.name, "supercategory": "synthetic"} for k, look in enumerate(looks)],
    }
    path = out / "instances.json"
    atomic_write_bytes(path, json.dumps(dataset).encode())
    return path
