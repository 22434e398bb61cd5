"""`ntt export-ls`: Label Studio JSON exports → COCO with RLE masks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import cli
from label_studio_sdk.converter import brush

from ntt_engine.export import rle_to_mask


def _region(kind: str, value: dict, width: int, height: int, **extra) -> dict:
    return {"id": f"r{id(value)}", "type": kind, "from_name": "tag", "to_name": "image", "original_width": width,
            "original_height": height, "image_rotation": 0, "value": value, **extra}


def _task(task_id: int, name: str, results: list, **annotation) -> dict:
    return {"id": task_id, "data": {"image": f"/data/upload/1/{name}"},
            "annotations": [{"id": task_id * 10, "result": results, "was_cancelled": False, **annotation}],
            "predictions": []}


def test_brush_masks_come_back_pixel_identical(datasets, tmp_path, capsys):
    _, test = datasets
    gt = json.loads(test.read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    tasks = []
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        results = [_region("brushlabels", {"format": "rle", "brushlabels": [names[a["category_id"]]],
                                           "rle": brush.mask2rle(rle_to_mask(a["segmentation"]).astype(np.uint8)
                                                                 * 255)}, image["width"], image["height"])
                   for a in anns]
        tasks.append(_task(image["id"], image["file_name"], results))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    out = tmp_path / "coco.json"
    assert cli("export-ls", export, "-o", out, "--categories", test, "--images", test.parent / "images") == 0
    assert "ntt: export-ls: 24 images" in capsys.readouterr().err
    coco = json.loads(out.read_text())
    assert [i["id"] for i in coco["images"]] == [i["id"] for i in gt["images"]]
    assert [i["file_name"] for i in coco["images"]] == [i["file_name"] for i in gt["images"]]
    assert coco["categories"] == [{"id": c["id"], "name": c["name"]} for c in gt["categories"]]
    assert len(coco["annotations"]) == len(gt["annotations"])
    for mine, truth in zip(coco["annotations"], gt["annotations"]):
        assert mine["image_id"] == truth["image_id"] and mine["category_id"] == truth["category_id"]
        assert np.array_equal(rle_to_mask(mine["segmentation"]), rle_to_mask(truth["segmentation"]))
        assert mine["bbox"] == truth["bbox"] and mine["area"] == truth["area"]
    # negatives (an empty annotation) stay as images without objects: they count in an evaluation
    assert len(coco["images"]) == len(gt["images"])


def test_polygons_rectangles_and_selection_rules(tmp_path, capsys):
    width, height = 200, 100
    hole = np.zeros((height, width), np.uint8)
    hole[10:60, 10:60] = 255
    hole[30:40, 30:40] = 0  # a hole: brush RLE keeps it, so must COCO
    tasks = [
        _task(1, "a.png", [
            _region("brushlabels", {"format": "rle", "rle": brush.mask2rle(hole), "brushlabels": ["cat"]}, width, height),
            _region("polygonlabels", {"points": [[50, 10], [90, 10], [90, 90], [50, 90]], "closed": True,
                                      "polygonlabels": ["dog"]}, width, height),
            _region("rectanglelabels", {"x": 10, "y": 20, "width": 20, "height": 40, "rotation": 0,
                                        "rectanglelabels": ["dog"]}, width, height),
            _region("rectanglelabels", {"x": 50, "y": 50, "width": 10, "height": 30, "rotation": 90,
                                        "rectanglelabels": ["cat"]}, width, height),
            _region("choices", {"choices": ["x"]}, width, height),
        ]),
        # cancelled annotations are ignored; the ground-truth one wins over a later one
        {"id": 2, "data": {"image": "/data/local-files/?d=sub/b.png"}, "annotations": [
            {"id": 21, "was_cancelled": True, "result": [_region("rectanglelabels", {
                "x": 0, "y": 0, "width": 50, "height": 50, "rectanglelabels": ["cancelled"]}, width, height)]},
            {"id": 22, "ground_truth": True, "updated_at": "2024-01-01", "result": [_region("rectanglelabels", {
                "x": 0, "y": 0, "width": 50, "height": 50, "rectanglelabels": ["cat"]}, width, height)]},
            {"id": 23, "updated_at": "2025-01-01", "result": [_region("rectanglelabels", {
                "x": 0, "y": 0, "width": 10, "height": 10, "rectanglelabels": ["cat"]}, width, height)]}]},
        {"id": 3, "data": {"image": "/data/upload/1/c.png"}, "annotations": []},  # not labelled: left out
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    assert cli("export-ls", export, "-o", tmp_path / "coco.json") == 0
    err = capsys.readouterr().err
    assert "ignored result types that have no COCO mask: {'choices': 1}" in err
    assert "left out 1 task with no annotation" in err
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a.png", "sub/b.png"]
    assert coco["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    anns = coco["annotations"]
    assert np.array_equal(rle_to_mask(anns[0]["segmentation"]), hole > 0)
    polygon = rle_to_mask(anns[1]["segmentation"])
    assert polygon[10:90, 100:180].mean() > 0.97 and polygon.sum() == pytest.approx(80 * 80, rel=0.05)
    assert anns[2]["bbox"] == [20.0, 20.0, 40.0, 40.0] and anns[2]["category_id"] == 2
    assert rle_to_mask(anns[2]["segmentation"]).sum() == pytest.approx(1600, rel=0.06)
    # 20x30 px rotated 90° clockwise around its top-left corner (100, 50): x from 70 to 100, y from 50 to 70
    assert anns[3]["bbox"] == pytest.approx([70.0, 50.0, 30.0, 20.0])
    assert anns[4]["image_id"] == 2 and anns[4]["bbox"] == [0.0, 0.0, 100.0, 50.0]
    assert len(anns) == 5


def test_json_min_export_is_refused(tmp_path, capsys):
    export = tmp_path / "min.json"
    export.write_text(json.dumps([{"image": "/data/upload/1/a.png", "id": 1, "tag": [{"x": 1}]}]))
    assert cli("export-ls", export, "-o", tmp_path / "coco.json") == 2
    assert "'JSON' format, not JSON_MIN" in capsys.readouterr().err
