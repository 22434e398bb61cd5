"""`ntt viz`: PNG overlays of COCO results (masks, boxes, class name and score) and a contact sheet of the first
images. Image files and class names come from `<results>.meta.json` (written by `ntt predict`) or from `--coco`."""
from __future__ import annotations

import colorsys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ntt_cli.coco import load_coco
from ntt_cli.console import CliError, command_parser, log, plural, progress
from ntt_cli.files import read_json, sidecar

CELL = (320, 240)


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "viz", "PNG overlays of results + a contact sheet", __doc__)
    p.add_argument("results", type=Path, metavar="RESULTS.json")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR")
    p.add_argument("--images", type=Path, metavar="DIR", help="image folder (default: the one predict used)")
    p.add_argument("--coco", type=Path, metavar="COCO.json",
                   help="images and categories from this COCO json (default: <results>.meta.json)")
    p.add_argument("--score-thr", type=float, default=0.5, help="draw detections scoring at least this (0.5)")
    p.add_argument("--limit", type=int, help="draw only the first N images")
    p.add_argument("--sheet", type=int, default=16, help="images on the contact sheet (default 16, 0: none)")
    p.set_defaults(func=run)


def palette(count: int) -> list[tuple[int, int, int]]:
    """Distinct saturated colours, golden-ratio hue steps."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((0.13 + i * 0.618034) % 1.0, 0.9, 1.0))
            for i in range(max(count, 1))]


def image_table(args) -> tuple[list[dict], dict[Any, str], Path]:
    if args.coco is not None:
        coco = load_coco(args.coco, "COCO file", need_categories=False)
        return coco.images, coco.category_names, coco.image_root(args.images)
    meta_path = sidecar(args.results, ".meta.json")
    if not meta_path.exists():
        raise CliError(f"no {meta_path} beside {args.results} to find the image files; pass --coco with the COCO "
                       "json the results were predicted on (and --images DIR)")
    meta = read_json(meta_path, "results metadata")
    root = args.images or Path(meta.get("image_root", "."))
    if not root.is_dir():
        raise CliError(f"image folder {root} does not exist; pass --images DIR")
    return meta["images"], {c["id"]: str(c.get("name")) for c in meta.get("categories", [])}, root


def draw(pixels: np.ndarray, dets: list[dict], names: dict[Any, str], colours: dict[Any, tuple]) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    from ntt_engine.export import rle_to_mask

    out = pixels.astype(np.float32)
    for det in sorted(dets, key=lambda d: d["score"]):  # best on top
        seg = det.get("segmentation")
        if isinstance(seg, dict):
            mask = rle_to_mask(seg)
            if mask.shape == out.shape[:2]:
                out[mask] = 0.45 * out[mask] + 0.55 * np.asarray(colours[det["category_id"]], np.float32)
    image = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    canvas = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for det in sorted(dets, key=lambda d: d["score"]):
        colour = colours[det["category_id"]]
        x, y, w, h = det["bbox"]
        canvas.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=2)
        text = f"{names.get(det['category_id'], det['category_id'])} {det['score']:.2f}"
        left, top, right, bottom = canvas.textbbox((0, 0), text, font=font)
        ty = y - (bottom - top) - 3 if y - (bottom - top) - 3 >= 0 else y + 1
        tx = max(0, min(x, image.width - (right - left) - 4))
        canvas.rectangle([tx, ty, tx + right - left + 3, ty + bottom - top + 2], fill=colour)
        canvas.text((tx + 2 - left, ty + 1 - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def contact_sheet(tiles: list[tuple[str, np.ndarray]], path: Path) -> None:
    from PIL import Image, ImageDraw

    columns = min(4, len(tiles))
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * CELL[0], rows * (CELL[1] + 14)), (255, 255, 255))
    canvas = ImageDraw.Draw(sheet)
    for i, (caption, tile) in enumerate(tiles):
        thumb = Image.fromarray(tile)
        scale = min(CELL[0] / thumb.width, CELL[1] / thumb.height)
        thumb = thumb.resize((max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale))),
                             Image.NEAREST if scale > 1 else Image.BILINEAR)
        x, y = (i % columns) * CELL[0], (i // columns) * (CELL[1] + 14)
        sheet.paste(thumb, (x + (CELL[0] - thumb.width) // 2, y + 14))
        canvas.text((x + 4, y + 1), caption, fill=(0, 0, 0))
    sheet.save(path)


def run(args) -> int:
    from ntt_engine import ImageLoadError, load_image

    results = read_json(args.results, "results file")
    if not isinstance(results, list):
        raise CliError(f"{args.results} must be a COCO results list (the output of `ntt predict`)")
    images, names, root = image_table(args)
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for det in results:
        if det.get("score", 0.0) >= args.score_thr:
            by_image[det.get("image_id")].append(det)
    known = {image["id"] for image in images}
    foreign = [i for i in by_image if i not in known]
    if foreign:
        raise CliError(f"{plural(len(foreign), 'image id')} of {args.results} are not in the image list "
                       f"({foreign[:5]}); pass --coco with the json the results were predicted on")
    category_ids = sorted(set(names) | {d["category_id"] for dets in by_image.values() for d in dets}, key=str)
    colours = dict(zip(category_ids, palette(len(category_ids))))
    selected = images[: args.limit] if args.limit else images
    args.output.mkdir(parents=True, exist_ok=True)
    tiles, missing, drawn = [], [], 0
    for image in progress(selected, desc="viz", unit="img"):
        file = root / str(image["file_name"])
        try:
            pixels = load_image(file)
        except ImageLoadError:
            missing.append(str(image["file_name"]))
            continue
        dets = by_image.get(image["id"], [])
        overlay = draw(pixels, dets, names, colours)
        target = args.output / Path(str(image["file_name"])).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(overlay).save(target)
        drawn += 1
        if len(tiles) < args.sheet:
            tiles.append((f"{image['file_name']}  ({len(dets)})", overlay))
    if missing:
        log.warning("%s not found or unreadable under %s, skipped: %s", plural(len(missing), "image"), root,
                    ", ".join(missing[:5]))
    if not drawn:
        raise CliError(f"no image could be drawn: none of the images were found under {root}; pass --images DIR")
    if tiles:
        contact_sheet(tiles, args.output / "contact_sheet.png")
    log.info("viz: %s with %s (score >= %.2f) -> %s%s", plural(drawn, "overlay"),
             plural(sum(len(by_image.get(i["id"], [])) for i in selected), "detection"), args.score_thr, args.output,
             f", contact sheet of {len(tiles)}" if tiles else "")
    return 0
