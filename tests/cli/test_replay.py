"""`ntt replay`: the labelling-effort figures on labelled data, with the benchmark's simulated annotator."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cli_helpers import ROOT, cli

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_annotation_effort as bench  # noqa: E402

IMAGES = 10


@pytest.fixture(scope="module")
def hard_set(tmp_path_factory) -> Path:
    from ntt_engine.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("replay")
    generate_dataset(root, IMAGES, 2, 4, difficulty="hard")
    return root


def test_replay_reproduces_the_benchmark_for_the_same_configuration(hard_set, tmp_path, capsys):
    assert bench.main(["--data", str(hard_set), "--keep-order", "--encoder", "test_colour_texture",
                       "--out", str(tmp_path / "bench")]) == 0
    stream = json.loads((tmp_path / "bench" / "annotation_effort_synthetic.json").read_text())["shifts"]["data"][
        "streams"][0]
    for loop, name in (("frozen", "frozen-3"), ("online+corrections+calibrated", "online+corrections+calibrated")):
        out = tmp_path / loop
        assert cli("replay", hard_set / "instances.json", "-o", out, "--preset", "synthetic", "--loop", loop) == 0
        stats = json.loads((out / "dashboard.json").read_text())
        expected, totals = stream["configs"][name], stats["totals"]
        assert {k: totals[k] for k in ("deleted", "added", "relabelled", "redrawn", "unchanged")} == \
            {k: expected[k] for k in ("deleted", "added", "relabelled", "redrawn", "unchanged")}, loop
        # per image: the same count (ntt_engine/effort.py) of the same simulated annotator
        assert [p["edits"] for p in stats["curve"]] == expected["per_image"]
        assert stats["annotations"] == {"counted": IMAGES, "from_predictions": IMAGES - 1, "drawn": 1}
        assert totals["hand_drawn_edits"] == stream["objects"]
        assert (out / "effort.png").read_bytes().startswith(b"\x89PNG")
        assert {c["label"] for c in stats["classes"]} and stats["replay"]["loop"] == loop
    assert "replayed 10 images" in capsys.readouterr().err


def test_replay_follows_a_given_order_and_refuses_an_unknown_image(hard_set, tmp_path, capsys):
    coco = json.loads((hard_set / "instances.json").read_text())
    names = [image["file_name"] for image in coco["images"]][::-1][:4]
    order = tmp_path / "order.txt"
    order.write_text("\n".join(names) + "\n")
    assert cli("replay", hard_set / "instances.json", "-o", tmp_path / "out", "--preset", "synthetic",
               "--order", order) == 0
    stats = json.loads((tmp_path / "out" / "dashboard.json").read_text())
    by_name = {image["file_name"]: image["id"] for image in coco["images"]}
    assert [p["task"] for p in stats["curve"]] == [by_name[n] for n in names]
    order.write_text("no-such-image.png\n")
    assert cli("replay", hard_set / "instances.json", "-o", tmp_path / "bad", "--preset", "synthetic",
               "--order", order) == 2
    assert "no-such-image.png" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_replay_takes_a_label_studio_export_in_the_order_its_annotations_were_made(hard_set, tmp_path):
    import numpy as np
    from label_studio_sdk.converter.brush import mask2rle
    from pycocotools import mask as mask_utils

    coco = json.loads((hard_set / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    tasks = []
    for n, image in enumerate(coco["images"]):
        results = []
        for i, a in enumerate(a for a in coco["annotations"] if a["image_id"] == image["id"]):
            mask = mask_utils.decode(a["segmentation"]).astype(np.uint8) * 255
            results.append({"id": f"r{i}", "from_name": "brush", "to_name": "image", "type": "brushlabels",
                            "original_width": image["width"], "original_height": image["height"],
                            "value": {"format": "rle", "rle": mask2rle(mask), "brushlabels": [names[a["category_id"]]]}})
        made = f"2026-12-0{1 + (n * 7) % IMAGES // 3}T10:{(n * 7) % IMAGES:02d}:00Z"  # not the task order
        tasks.append({"id": 100 + image["id"], "data": {"image": f"/data/local-files/?d=images/{image['file_name']}"},
                      "annotations": [{"id": n + 1, "result": results, "created_at": made, "was_cancelled": False}]})
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    # --images: the folder the local-files paths are relative to (Label Studio's LOCAL_FILES_DOCUMENT_ROOT)
    assert cli("replay", export, "--images", hard_set, "-o", tmp_path / "ls", "--preset", "synthetic") == 0
    stats = json.loads((tmp_path / "ls" / "dashboard.json").read_text())
    made_order = [t["id"] for t in sorted(tasks, key=lambda t: t["annotations"][0]["created_at"])]
    assert [p["task"] for p in stats["curve"]] == made_order != [t["id"] for t in tasks]
    # the same images replayed from the COCO file in that order: the same figures
    order = tmp_path / "order.txt"
    order.write_text("\n".join(str(t - 100) for t in made_order))
    assert cli("replay", hard_set / "instances.json", "-o", tmp_path / "coco", "--preset", "synthetic",
               "--order", order) == 0
    assert json.loads((tmp_path / "coco" / "dashboard.json").read_text())["totals"] == stats["totals"]
