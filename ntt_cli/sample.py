"""`ntt sample`: seeded k-shot reference sampling with the paper's rules (ALGORITHM.md §6.1).

For each category (in id order) the (image, annotation) pairs are shuffled by one `random.Random(seed)`, then walked,
keeping valid annotations from images not yet used for that class, until K. The RNG use does not depend on K, so for
one seed the K-shot sets are nested (the 5-shot set is the first 5 of the 10-shot set).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ntt_cli.coco import category_ids_named, load_coco
from ntt_cli.console import CliError, command_parser, log, plural
from ntt_cli.files import write_json

MIN_BOX_SIDE = 32
BORDER_MARGIN = 10


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "sample", "seeded k-shot reference sampling (paper rules)", __doc__)
    p.add_argument("refs", type=Path, metavar="REFS.json", help="COCO json to sample references from")
    p.add_argument("--shots", "-k", type=int, required=True, help="instances per class (K)")
    p.add_argument("--seed", type=int, default=33, help="random seed (default 33, the paper's)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output COCO json of the sampled references")
    p.add_argument("--rule", choices=("paper", "any"), default="paper",
                   help=f"paper: not crowd, box sides >= {MIN_BOX_SIDE} px, >= {BORDER_MARGIN} px from every border; "
                        "any: only 'not crowd' (one instance per image per class always holds)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="sample only these classes (default: all)")
    p.set_defaults(func=run)


def is_valid(ann: dict[str, Any], image: dict[str, Any], rule: str) -> bool:
    if ann.get("iscrowd", 0):
        return False
    if rule == "any":
        return True
    bbox = ann.get("bbox")
    width, height = image.get("width"), image.get("height")
    if not bbox or len(bbox) != 4 or width is None or height is None:
        return False
    x, y, w, h = (float(v) for v in bbox)
    if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
        return False
    return x >= BORDER_MARGIN and y >= BORDER_MARGIN and x + w <= width - BORDER_MARGIN \
        and y + h <= height - BORDER_MARGIN


def sample(coco, shots: int, seed: int, rule: str) -> tuple[dict[int, list[dict]], dict[int, int]]:
    """{category id: [annotations]} with up to `shots` each, and the number of eligible images per class."""
    rng = random.Random(seed)
    images = {image["id"]: image for image in coco.images}
    chosen: dict[int, list[dict]] = {}
    available: dict[int, int] = {}
    for category in sorted(coco.categories, key=lambda c: c["id"]):
        cat_id = category["id"]
        pairs = [(ann["image_id"], ann) for ann in coco.annotations if ann["category_id"] == cat_id]
        rng.shuffle(pairs)  # always shuffled, whatever K and --classes: the sets stay nested
        used: set = set()
        picked: list[dict] = []
        for image_id, ann in pairs:
            if image_id in used or not is_valid(ann, images[image_id], rule):
                continue
            used.add(image_id)
            if len(picked) < shots:
                picked.append(ann)
        chosen[cat_id] = picked
        available[cat_id] = len(used)
    return chosen, available


def run(args) -> int:
    if args.shots < 1:
        raise CliError("--shots must be at least 1")
    coco = load_coco(args.refs, "reference file")
    names = coco.category_names
    wanted = category_ids_named(coco, args.classes, args.refs)
    chosen, available = sample(coco, args.shots, args.seed, args.rule)
    short = [cat_id for cat_id in wanted if len(chosen[cat_id]) < args.shots]
    if short:
        detail = "; ".join(f"{names[c]!r} (id {c}): {available[c]}" for c in short)
        hint = " or --rule any" if args.rule == "paper" else ""
        raise CliError(f"too few valid instances for {args.shots}-shot sampling with --rule {args.rule} in "
                       f"{plural(len(short), 'class')}: {detail} usable image(s). Lower --shots{hint}, or restrict "
                       f"--classes", 2)
    selected = [ann for cat_id in wanted for ann in chosen[cat_id]]
    image_ids = {ann["image_id"] for ann in selected}
    images = [image for image in coco.images if image["id"] in image_ids]
    categories = [c for c in coco.categories if c["id"] in set(wanted)]
    info = dict(coco.data.get("info") or {}) if isinstance(coco.data.get("info"), dict) else {}
    if "image_root" not in info:
        info["image_root"] = str(Path(coco.image_root(None)).resolve())
    elif not Path(info["image_root"]).is_absolute():
        info["image_root"] = str((coco.path.parent / info["image_root"]).resolve())
    info["sampling"] = {"source": str(args.refs), "shots": args.shots, "seed": args.seed, "rule": args.rule,
                        "selection": {str(c): [{"img_id": a["image_id"], "ann_ids": [a["id"]]} for a in chosen[c]]
                                      for c in wanted}}
    out = {"info": info, "licenses": coco.data.get("licenses", []), "images": images, "annotations": selected,
           "categories": categories}
    write_json(args.output, out)
    log.info("sampled %d-shot (seed %d, rule %s): %s over %s of %s -> %s", args.shots, args.seed, args.rule,
             plural(len(selected), "reference"), plural(len(images), "image"), plural(len(categories), "class"),
             args.output)
    return 0
