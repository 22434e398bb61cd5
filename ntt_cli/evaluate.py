"""`ntt eval`: pycocotools COCOeval for bbox and segm: the 12 standard numbers and a per-class AP table.

`--classes` restricts the evaluation to those class names, over all images (the "novel classes" protocol: images
without any of them stay in the set; detections of other classes are ignored).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ntt_cli.coco import category_ids_named, load_coco
from ntt_cli.console import CliError, command_parser, examples, log, plural
from ntt_cli.files import read_json, write_json

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "eval", "COCOeval bbox + segm, per-class AP table", __doc__)
    p.add_argument("gt", type=Path, metavar="GT.json")
    p.add_argument("results", type=Path, metavar="RESULTS.json")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="evaluate only these class names (novel classes)")
    p.add_argument("--iou-types", nargs="+", choices=("bbox", "segm"), default=["bbox", "segm"])
    p.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout (nothing else)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE.json", help="also write the JSON numbers here")
    p.set_defaults(func=run)


def check_results(results: Any, gt, path: Path) -> list[dict[str, Any]]:
    if isinstance(results, dict) and "annotations" in results:
        raise CliError(f"{path} is a COCO dataset, not a results list; pass the output of `ntt predict`")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise CliError(f"{path} must be a COCO results list: [{{image_id, category_id, bbox, segmentation, score}}]")
    images = {image["id"]: image for image in gt.images}
    categories = {c["id"] for c in gt.categories}
    foreign = sorted({r.get("image_id") for r in results if r.get("image_id") not in images}, key=str)
    if foreign:
        raise CliError(f"{path} was made for another dataset: {plural(len(foreign), 'image id')} of its results are "
                       f"not images of {gt.path} ({examples(foreign)}); predict on {gt.path} "
                       f"(`ntt predict MEMORY {gt.path} -o …`)")
    bad_cat = sorted({r.get("category_id") for r in results if r.get("category_id") not in categories}, key=str)
    if bad_cat:
        raise CliError(f"{path}: category ids {bad_cat} are not categories of {gt.path} (ids {sorted(categories)}); "
                       "predict with --categories GT.json so the ids match")
    for r in results:
        for key in ("score",):
            if key not in r:
                raise CliError(f"{path}: a result of image {r.get('image_id')} has no {key!r}")
        seg = r.get("segmentation")
        image = images[r["image_id"]]
        if isinstance(seg, dict) and "height" in image and list(seg.get("size", [])) != [image["height"], image["width"]]:
            raise CliError(f"{path} was made for another dataset: image {r['image_id']} is {image['height']}x"
                           f"{image['width']} in {gt.path} but its result masks are {seg.get('size')}")
        if "bbox" not in r and not isinstance(seg, dict):
            raise CliError(f"{path}: a result of image {r['image_id']} has neither 'bbox' nor an RLE 'segmentation'")
    return results


def gt_index(gt):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    data = copy.deepcopy(gt.data)
    data.setdefault("annotations", [])
    images = {image["id"]: image for image in data["images"]}
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            seg = ann.get("segmentation")
            if isinstance(seg, dict):
                ann["area"] = float(mask_utils.area(seg if not isinstance(seg["counts"], list)
                                                    else mask_utils.frPyObjects(seg, *seg["size"])))
            else:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3]) if ann.get("bbox") else 0.0
        if "bbox" not in ann and isinstance(ann.get("segmentation"), dict):
            ann["bbox"] = [float(v) for v in mask_utils.toBbox(ann["segmentation"])]
        elif "bbox" not in ann:
            raise CliError(f"{gt.path}: annotation {ann.get('id')} has no bbox")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, images


def evaluate(gt_coco, results: list[dict], iou_type: str, cat_ids: list[int], img_ids: list) -> dict[str, Any]:
    from pycocotools.cocoeval import COCOeval

    dets = copy.deepcopy(results)
    if iou_type == "segm":
        for det in dets:
            det.pop("bbox", None)  # area from the mask, not the box (as detectron2 does)
    with contextlib.redirect_stdout(io.StringIO()):
        if dets:
            dt_coco = gt_coco.loadRes(dets)
        else:
            from pycocotools.coco import COCO

            dt_coco = COCO()
            dt_coco.dataset = {"images": gt_coco.dataset["images"], "categories": gt_coco.dataset["categories"],
                               "annotations": []}
            dt_coco.createIndex()
        evaluator = COCOeval(gt_coco, dt_coco, iou_type)
        evaluator.params.catIds = cat_ids
        evaluator.params.imgIds = img_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        per_class[cat_id] = {"AP": float(np.mean(p[p > -1])) if (p > -1).any() else -1.0,
                             "AP50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else -1.0}
    return {"stats": dict(zip(STAT_NAMES, (float(s) for s in evaluator.stats))), "per_class": per_class}


def run(args) -> int:
    gt = load_coco(args.gt, "ground-truth file")
    results = check_results(read_json(args.results, "results file"), gt, args.results)
    names = gt.category_names
    cat_ids = category_ids_named(gt, args.classes, args.gt)
    iou_types = list(dict.fromkeys(args.iou_types))
    if "segm" in iou_types:
        box_only = sum(1 for a in gt.annotations if not a.get("segmentation") and a["category_id"] in cat_ids)
        no_mask = sum(1 for r in results if not isinstance(r.get("segmentation"), dict))
        reason = (f"{plural(box_only, 'ground-truth annotation')} without segmentation (run `ntt boxes-to-masks`)"
                  if box_only else f"{plural(no_mask, 'result')} without an RLE segmentation" if no_mask else None)
        if reason:
            log.warning("segm skipped: %s", reason)
            iou_types.remove("segm")
        elif any(not isinstance(a.get("segmentation"), dict) for a in gt.annotations) and \
                any("height" not in image for image in gt.images):
            raise CliError(f"{args.gt}: polygon masks need 'height' and 'width' on every image")
    if not iou_types:
        raise CliError("nothing to evaluate")
    if not results:
        log.warning("%s holds no detection: every AP is 0", args.results)
    gt_coco, _ = gt_index(gt)
    img_ids = sorted(gt_coco.getImgIds(), key=str)
    report: dict[str, Any] = {"gt": str(args.gt), "results": str(args.results), "images": len(img_ids),
                              "detections": len(results), "classes": [names[c] for c in cat_ids]}
    per_class = {names[c]: {"id": c, "gt": sum(1 for a in gt.annotations if a["category_id"] == c
                                               and not a.get("iscrowd", 0))} for c in cat_ids}
    for iou_type in iou_types:
        outcome = evaluate(gt_coco, results, iou_type, cat_ids, img_ids)
        report[iou_type] = outcome["stats"]
        for cat_id, values in outcome["per_class"].items():
            per_class[names[cat_id]].update({f"{iou_type}_AP": values["AP"], f"{iou_type}_AP50": values["AP50"]})
    report["per_class"] = per_class
    if args.output:
        write_json(args.output, report, indent=1)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
    else:
        sys.stdout.write(format_report(report, iou_types))
    log.info("evaluated %s and %s over %s: %s", plural(len(results), "detection"), plural(len(cat_ids), "class"),
             plural(len(img_ids), "image"), ", ".join(f"{t} AP {report[t]['AP'] * 100:.1f}" for t in iou_types))
    return 0


def _pct(value: float) -> str:
    return "    -" if value < 0 else f"{value * 100:5.1f}"


def format_report(report: dict[str, Any], iou_types: list[str]) -> str:
    lines = [f"{report['images']} images, {len(report['classes'])} classes, {report['detections']} detections "
             "(COCOeval, maxDets 100, numbers in %)", "      " + " ".join(f"{n:>5}" for n in STAT_NAMES)]
    for iou_type in iou_types:
        lines.append(f"{iou_type:<5} " + " ".join(_pct(report[iou_type][n]) for n in STAT_NAMES))
    width = max([5] + [len(n) for n in report["per_class"]])
    columns = [f"{t} {m}" for t in iou_types for m in ("AP", "AP50")]
    lines += ["", f"{'class':<{width}} {'id':>4} {'gt':>5} " + " ".join(f"{c:>9}" for c in columns)]
    for name, row in report["per_class"].items():
        values = " ".join(f"{_pct(row[f'{t}_{m}']):>9}" for t in iou_types for m in ("AP", "AP50"))
        lines.append(f"{name:<{width}} {row['id']:>4} {row['gt']:>5} {values}")
    return "\n".join(lines) + "\n"
