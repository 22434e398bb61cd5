"""`ntt boxes-to-masks`: turn box-only COCO annotations into masks with the proposer (SAM2), written as RLE.

Unlike the reference repo's polygon output, RLE keeps holes. `area` becomes the mask's pixel count and `bbox` stays
the annotated box. A box whose mask comes back empty keeps the box rectangle as its mask (a warning counts them).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ntt_cli.coco import load_coco, resolve_images
from ntt_cli.console import command_parser, log, plural, progress
from ntt_cli.engine_options import add_engine_options, build_engine, engine_config
from ntt_cli.files import write_json
from ntt_cli.memory_build import load, masks_from_boxes, usable_box


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "boxes-to-masks", "box-only COCO annotations -> RLE masks via SAM2", __doc__)
    p.add_argument("input", type=Path, metavar="IN.json")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.json")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="folder of the images (default: info.image_root of the json, else the json's folder)")
    p.add_argument("--all", action="store_true", help="re-segment annotations that already have a segmentation too")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave the annotations of missing image files unchanged instead of failing")
    add_engine_options(p)
    p.set_defaults(func=run)


def box_mask(bbox, height: int, width: int) -> np.ndarray:
    x, y, w, h = (float(v) for v in bbox)
    mask = np.zeros((height, width), bool)
    mask[max(0, int(np.floor(y))):max(0, int(np.ceil(y + h))), max(0, int(np.floor(x))):max(0, int(np.ceil(x + w)))] = True
    return mask


def run(args) -> int:
    from ntt_engine.export import mask_to_rle

    started = time.perf_counter()
    coco = load_coco(args.input, "input file", need_categories=False)
    root = coco.image_root(args.images)

    def wanted(ann: dict) -> bool:
        return not ann.get("iscrowd", 0) and (args.all or not ann.get("segmentation"))

    todo = [image for image in coco.images if any(wanted(a) for a in coco.by_image.get(image["id"], []))]
    if not todo:
        log.warning("%s has no box-only annotations: nothing to convert (use --all to re-segment every box)",
                    args.input)
    pairs = resolve_images(coco, root, args.skip_missing, todo)
    engine = build_engine(engine_config(args)) if pairs else None
    converted = fallback = unusable = 0
    for image, file in progress(pairs, desc="boxes-to-masks", unit="img"):
        pixels = load(file, engine.config)
        height, width = pixels.shape[:2]
        anns = [a for a in coco.by_image[image["id"]] if wanted(a)]
        good = [a for a in anns if usable_box(a, width, height)]
        unusable += len(anns) - len(good)
        if not good:
            continue
        for ann, mask in zip(good, masks_from_boxes(engine, pixels, [a["bbox"] for a in good])):
            if not mask.any():
                mask = box_mask(ann["bbox"], height, width)
                fallback += 1
            ann["segmentation"] = mask_to_rle(mask)
            ann["segmentation"]["size"] = [int(height), int(width)]
            ann["area"] = int(mask.sum())
            converted += 1
    if unusable:
        log.warning("left %s unchanged: no usable box (missing, empty or outside the image)",
                    plural(unusable, "annotation"))
    if fallback:
        log.warning("%s got an empty mask from the proposer; their box rectangle is used as the mask",
                    plural(fallback, "annotation"))
    data = dict(coco.data)
    info = dict(data.get("info") or {}) if isinstance(data.get("info"), dict) else {}
    info["image_root"] = str(root.resolve())
    data["info"] = info
    write_json(args.output, data)
    log.info("boxes-to-masks: %s converted over %s -> %s (%.1f s)", plural(converted, "annotation"),
             plural(len(pairs), "image"), args.output, time.perf_counter() - started)
    return 0
