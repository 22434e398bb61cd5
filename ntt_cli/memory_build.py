"""`ntt memory build`: fill the memory bank from a COCO file of references.

Every annotated image becomes one reference (its masks and class names); box-only annotations are turned into masks by
the proposer (SAM2) first. Images listed without any annotation are recorded as negatives. The memory is written
atomically, with `<memory>.meta.json` beside it (categories, engine config) so `ntt predict` needs no more options.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ntt_cli.coco import annotation_mask, load_coco, resolve_images, xywh_to_xyxy
from ntt_cli.console import CliError, log, plural, progress
from ntt_cli.engine_options import add_engine_options, build_engine, engine_config
from ntt_cli.files import sidecar, write_json

META_SUFFIX = ".meta.json"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("memory", help="memory bank commands (build)")
    sub = p.add_subparsers(dest="memory_command", metavar="{build}", required=True)
    b = sub.add_parser("build", help="fill and save the memory from a COCO file of references",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("refs", type=Path, metavar="REFS.json", help="COCO json of references (e.g. from `ntt sample`)")
    b.add_argument("--images", type=Path, metavar="DIR",
                   help="folder of the images (default: info.image_root of the json, else the json's folder)")
    b.add_argument("-o", "--output", type=Path, required=True, metavar="MEMORY.ntt")
    b.add_argument("--skip-missing", action="store_true", help="warn about missing image files instead of failing")
    add_engine_options(b)
    b.set_defaults(func=run)


def masks_from_boxes(engine, image: np.ndarray, boxes_xywh: list) -> list[np.ndarray]:
    from ntt_engine import PromptSet

    boxes = np.asarray([xywh_to_xyxy(b) for b in boxes_xywh], np.float32).reshape(-1, 4)
    return [inst.mask for inst in engine.segment(image, PromptSet(boxes=boxes))]  # working size: add_reference takes it


def usable_box(ann: dict, width: int, height: int) -> bool:
    bbox = ann.get("bbox")
    if not bbox or len(bbox) != 4:
        return False
    x, y, w, h = (float(v) for v in bbox)
    return w > 0 and h > 0 and x < width and y < height and x + w > 0 and y + h > 0


def load(file: Path, config) -> np.ndarray:
    from ntt_engine import ImageLoadError, load_image

    try:
        return load_image(file, config.max_image_pixels)
    except ImageLoadError as exc:
        raise CliError(f"{exc}; fix or remove that image") from None


def run(args) -> int:
    started = time.perf_counter()
    coco = load_coco(args.refs, "reference file")
    names = coco.category_names
    if len(set(names.values())) != len(names):
        raise CliError(f"{args.refs}: category names must be unique (the memory is keyed by name): {names}")
    pairs = resolve_images(coco, coco.image_root(args.images), args.skip_missing)
    if not pairs:
        raise CliError(f"{args.refs} lists no images to build a memory from")
    config = engine_config(args)
    engine = build_engine(config)
    from ntt_engine import ReferenceError

    skipped = {"crowd": 0, "empty mask": 0, "unusable box": 0}
    from_boxes = negatives = 0
    for image, file in progress(pairs, desc="memory", unit="img"):
        anns = coco.by_image.get(image["id"], [])
        if not anns:
            engine.add_negative(str(image["id"]), load(file, config))
            negatives += 1
            continue
        pixels = load(file, config)
        masks, labels, boxes = _image_masks(engine, pixels, anns, names, skipped)
        from_boxes += boxes
        keep = [i for i, m in enumerate(masks) if m is not None and m.any()]
        skipped["empty mask"] += len(masks) - len(keep)
        if not keep:
            continue
        try:
            engine.add_reference(str(image["id"]), pixels, [labels[i] for i in keep], masks=[masks[i] for i in keep])
        except ReferenceError as exc:
            raise CliError(f"image {file} (id {image['id']}): {exc}") from None
    for what, count in skipped.items():
        if count:
            log.warning("skipped %s (%s)", plural(count, "annotation"), what)
    memory = engine.memory
    if len(memory) == 0:
        raise CliError(f"no usable reference in {args.refs}: every annotation was skipped (see the warnings above)")
    memory.save(args.output)
    write_json(sidecar(args.output, META_SUFFIX), {
        "format": "ntt-memory-meta", "version": 1, "model_id": engine.model_id, "config": config.to_dict(),
        "categories": [{"id": c["id"], "name": names[c["id"]]} for c in sorted(coco.categories, key=lambda c: c["id"])],
        "references": str(args.refs), "counts": memory.counts(), "negative_images": negatives,
    }, indent=1)
    counts = ", ".join(f"{label} {count}" for label, count in memory.counts().items())
    log.info("memory %s: %s from %s (%s), %s, %s masks made from boxes, %d bytes, %.1f s", args.output,
             plural(len(memory), "reference"), plural(len(pairs) - negatives, "image"), counts,
             plural(negatives, "negative image"), from_boxes, memory.nbytes(), time.perf_counter() - started)
    return 0


def _image_masks(engine, pixels: np.ndarray, anns: list[dict], names: dict[int, str], skipped: dict[str, int]
                 ) -> tuple[list[np.ndarray | None], list[str], int]:
    """One image's annotations → (masks, their labels, how many masks SAM made from boxes); crowd annotations and
    unusable boxes are counted in `skipped`."""
    height, width = pixels.shape[:2]
    masks: list[np.ndarray | None] = []
    labels, box_only = [], []
    for ann in anns:
        if ann.get("iscrowd", 0):
            skipped["crowd"] += 1
            continue
        mask = annotation_mask(ann, height, width)
        if mask is None and not usable_box(ann, width, height):
            skipped["unusable box"] += 1
            continue
        if mask is None:
            box_only.append((len(masks), ann["bbox"]))
        masks.append(mask)
        labels.append(names[ann["category_id"]])
    if box_only:
        for (index, _), mask in zip(box_only, masks_from_boxes(engine, pixels, [b for _, b in box_only])):
            masks[index] = mask
    return masks, labels, len(box_only)


def read_meta(memory_path: Path) -> dict | None:
    path = sidecar(memory_path, META_SUFFIX)
    if not path.exists():
        return None
    from ntt_cli.files import read_json

    meta = read_json(path, "memory metadata")
    return meta if isinstance(meta, dict) and meta.get("format") == "ntt-memory-meta" else None
