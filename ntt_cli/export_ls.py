"""`ntt export-ls`: a Label Studio JSON export → COCO with RLE masks, so human-verified labels leave Label Studio as
COCO without losing holes (Label Studio's own COCO export skips brushes; BRUSH_TO_COCO turns them into polygons).

BrushLabels (brush RLE, decoded with label_studio_sdk; a pixel belongs to the mask when its alpha is > 0),
PolygonLabels and RectangleLabels (percent of the image, rotation around the top-left corner) are converted.
Per task, the ground-truth annotation is used, else the most recent one that was not cancelled (`--source
predictions`: the most recent prediction). A task whose chosen annotation has no region is an image without objects.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from ntt_cli.coco import load_coco
from ntt_cli.console import CliError, command_parser, log, plural, progress
from ntt_cli.files import read_json, write_json

KINDS = {"brushlabels": "brushlabels", "polygonlabels": "polygonlabels", "rectanglelabels": "rectanglelabels"}


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "export-ls", "Label Studio JSON export -> COCO with RLE masks", __doc__)
    p.add_argument("export", type=Path, metavar="EXPORT.json", help="Label Studio export in the 'JSON' format")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="COCO.json")
    p.add_argument("--categories", type=Path, metavar="COCO.json", help="take category ids from this COCO json")
    p.add_argument("--source", choices=("annotations", "predictions"), default="annotations")
    p.add_argument("--data-key", help="task data field holding the image (default: 'image', else the only one)")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="image folder: sizes of images without any region are read from here")
    p.set_defaults(func=run)


class Skip(Exception):
    """A region that cannot be converted; counted by reason."""


def file_name(url: str) -> str:
    parsed = urlparse(url)
    if "d" in parse_qs(parsed.query):  # /data/local-files/?d=dir/x.png
        return unquote(parse_qs(parsed.query)["d"][0]).lstrip("/")
    return unquote(Path(parsed.path).name) or url


def image_url(task: dict[str, Any], key: str | None) -> str:
    data = task.get("data") or {}
    if key:
        if key not in data:
            raise CliError(f"task {task.get('id')} has no data field {key!r} (it has {sorted(data)})")
        return str(data[key])
    if "image" in data:
        return str(data["image"])
    strings = [k for k, v in data.items() if isinstance(v, str)]
    if len(strings) != 1:
        raise CliError(f"task {task.get('id')}: cannot tell which data field is the image ({sorted(data)}); "
                       "pass --data-key")
    return str(data[strings[0]])


def choose(task: dict[str, Any], source: str) -> dict[str, Any] | None:
    items = [a for a in task.get(source) or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not items:
        return None
    truth = [a for a in items if a.get("ground_truth")]
    return max(truth or items, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id", 0)))


def region(item: dict[str, Any], width: int, height: int) -> tuple[list[str], np.ndarray, list[float]]:
    """(labels, mask, bbox xywh) of one Label Studio result item."""
    from label_studio_sdk.converter import brush

    from ntt_engine.export import mask_to_bbox, polygons_to_mask

    kind, value = item["type"], item.get("value") or {}
    labels = [str(v) for v in value.get(KINDS[kind]) or []]
    if not labels:
        raise Skip("no label")
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle" or not value.get("rle"):
            raise Skip("brush without RLE")
        try:
            flat = brush.decode_rle(value["rle"])
        except Exception:  # noqa: BLE001 - any decoding failure is a corrupt RLE
            raise Skip("corrupt brush RLE") from None
        if flat.size != width * height * 4:
            raise Skip("brush RLE size differs from original_width x original_height")
        mask = np.asarray(flat).reshape(height, width, 4)[:, :, 3] > 0
        return labels, mask, list(mask_to_bbox(mask))
    if kind == "polygonlabels":
        points = [(float(x) * width / 100.0, float(y) * height / 100.0) for x, y in value.get("points") or []]
        if len(points) < 3:
            raise Skip("polygon with fewer than 3 points")
        mask = polygons_to_mask([[c for p in points for c in p]], height, width)
        return labels, mask, list(mask_to_bbox(mask))
    x, y = float(value["x"]) * width / 100.0, float(value["y"]) * height / 100.0
    w, h = float(value["width"]) * width / 100.0, float(value["height"]) * height / 100.0
    angle = math.radians(float(value.get("rotation") or 0.0))
    corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    polygon = [(x + dx * math.cos(angle) - dy * math.sin(angle), y + dx * math.sin(angle) + dy * math.cos(angle))
               for dx, dy in corners]
    mask = polygons_to_mask([[c for p in polygon for c in p]], height, width)
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
    x1, y1 = min(float(width), max(xs)), min(float(height), max(ys))
    return labels, mask, [x0, y0, x1 - x0, y1 - y0]


def image_size(task, results, images_dir: Path | None, name: str) -> tuple[int, int] | None:
    for item in results:
        if item.get("original_width") and item.get("original_height"):
            return int(item["original_width"]), int(item["original_height"])
    if images_dir is not None and (images_dir / name).is_file():
        from PIL import Image

        with Image.open(images_dir / name) as image:
            return image.size
    return None


def run(args) -> int:
    tasks = read_tasks(args.export)
    fixed = None
    if args.categories is not None:
        fixed = {name: cat_id for cat_id, name in load_coco(args.categories, "categories file").category_names.items()}
    images, pending, skipped, other = [], [], Counter(), Counter()
    unlabelled = no_size = 0
    for task in progress(tasks, desc="export-ls", unit="task"):
        chosen = choose(task, args.source)
        if chosen is None:
            unlabelled += 1
            continue
        results = [r for r in chosen.get("result") or [] if isinstance(r, dict)]
        name = file_name(image_url(task, args.data_key))
        size = image_size(task, results, args.images, name)
        if size is None:
            no_size += 1
            continue
        width, height = size
        images.append({"id": task.get("id", len(images) + 1), "file_name": name, "width": width, "height": height})
        for item in results:
            if item.get("type") not in KINDS:
                other[str(item.get("type"))] += 1
                continue
            try:
                labels, mask, bbox = region(item, width, height)
            except (Skip, KeyError, TypeError, ValueError) as exc:
                skipped[str(exc) if isinstance(exc, Skip) else f"malformed {item['type']} value"] += 1
                continue
            if not mask.any():
                skipped["empty mask"] += 1
                continue
            score = item.get("score", chosen.get("score")) if args.source == "predictions" else None
            for label in labels:
                pending.append((images[-1]["id"], label, mask, bbox, score))
    category_ids, categories = _categories(sorted({p[1] for p in pending}), fixed, args.categories)
    annotations = _coco_annotations(pending, category_ids)
    if not images:
        raise CliError(f"{args.export} has no task with a usable {args.source[:-1]} ({plural(len(tasks), 'task')}, "
                       f"{unlabelled} with no {args.source[:-1]}); nothing to export")
    info = {"description": f"Label Studio export {args.export.name} ({args.source})"}
    if args.images is not None:
        info["image_root"] = str(args.images.resolve())
    write_json(args.output, {"info": info, "images": images, "annotations": annotations, "categories": categories})
    for reason, count in sorted(skipped.items()):
        log.warning("skipped %s: %s", plural(count, "region"), reason)
    if other:
        log.warning("ignored result types that have no COCO mask: %s", dict(other))
    if unlabelled:
        log.warning("left out %s with no %s", plural(unlabelled, "task"), args.source[:-1])
    if no_size:
        log.warning("left out %s without any region and of unknown size (pass --images DIR to keep them as images "
                    "without objects)", plural(no_size, "task"))
    log.info("export-ls: %s, %s, %s -> %s", plural(len(images), "image"), plural(len(annotations), "annotation"),
             plural(len(categories), "category"), args.output)
    return 0


def read_tasks(path: Path) -> list[dict]:
    tasks = read_json(path, "Label Studio export")
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise CliError(f"{path} is not a Label Studio JSON export (a list of tasks)")
    if tasks and not any("data" in t for t in tasks):
        raise CliError(f"{path} has no task 'data': export the project with the 'JSON' format, not JSON_MIN")
    return tasks


def _categories(names: list[str], fixed: dict[str, int] | None, source: Path | None
                ) -> tuple[dict[str, int], list[dict]]:
    """Category id per label and the COCO categories: those of --categories (every label must be one), else 1..n
    in name order."""
    if fixed is None:
        return {n: i + 1 for i, n in enumerate(names)}, [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    unknown = [n for n in names if n not in fixed]
    if unknown:
        raise CliError(f"labels {unknown} are not categories of {source} (it has {sorted(fixed)})")
    return {n: fixed[n] for n in names}, [{"id": cat_id, "name": n}
                                          for n, cat_id in sorted(fixed.items(), key=lambda kv: kv[1])]


def _coco_annotations(pending: list[tuple], category_ids: dict[str, int]) -> list[dict]:
    from ntt_engine.export import mask_to_rle

    annotations = []
    for image_id, label, mask, bbox, score in pending:
        rle = mask_to_rle(mask)
        ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_ids[label],
               "segmentation": {"size": rle["size"], "counts": rle["counts"]}, "area": int(mask.sum()),
               "bbox": [float(v) for v in bbox], "iscrowd": 0}
        if score is not None:
            ann["score"] = float(score)
        annotations.append(ann)
    return annotations
