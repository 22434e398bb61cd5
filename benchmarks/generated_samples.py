"""The benchmarks' shared input: a small generated COCO set, read back as (image, labels, masks) per image."""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ntt_engine.image_io import load_image  # noqa: E402
from ntt_engine.synthetic import generate_dataset  # noqa: E402

Sample = tuple[np.ndarray, list[str], list[np.ndarray]]


def generated_samples(prefix: str, **dataset: object) -> list[Sample]:
    """`generate_dataset(**dataset)` into a temporary folder; every image with its class names and masks, by id."""
    from pycocotools.coco import COCO

    data = Path(tempfile.mkdtemp(prefix=prefix))
    with contextlib.redirect_stdout(sys.stderr):  # pycocotools chats on stdout; reports own it
        coco = COCO(str(generate_dataset(data, **dataset)))
    samples = []
    for image_id in sorted(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        samples.append((load_image(data / "images" / coco.loadImgs(image_id)[0]["file_name"]),
                        [coco.loadCats(a["category_id"])[0]["name"] for a in anns],
                        [coco.annToMask(a).astype(bool) for a in anns]))
    return samples
