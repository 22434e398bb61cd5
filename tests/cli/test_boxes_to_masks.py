"""Box-only annotations: `ntt boxes-to-masks` writes RLE masks, `ntt memory build` converts them on the fly."""
from __future__ import annotations

import json

import numpy as np
from cli_helpers import cli

from ntt_engine.export import rle_to_mask


def _strip_masks(src, dst, every=1):
    data = json.loads(src.read_text())
    for i, ann in enumerate(data["annotations"]):
        if i % every == 0:
            ann.pop("segmentation")
    info = data.setdefault("info", {})
    info["image_root"] = str(src.parent / info.get("image_root", "."))  # absolute stays absolute
    dst.write_text(json.dumps(data))
    return dst


def test_boxes_to_masks_recovers_the_masks(chain, tmp_path, capsys):
    boxes = _strip_masks(chain.test, tmp_path / "boxes.json", every=2)
    out = tmp_path / "masks.json"
    assert cli("boxes-to-masks", boxes, "-o", out, "--preset", "synthetic") == 0
    err = capsys.readouterr().err
    converted = len([a for a in json.loads(boxes.read_text())["annotations"] if "segmentation" not in a])
    assert f"boxes-to-masks: {converted} annotations converted" in err
    truth = json.loads(chain.test.read_text())["annotations"]
    made = json.loads(out.read_text())["annotations"]
    ious = []
    for i, (mine, gt) in enumerate(zip(made, truth)):
        assert mine["bbox"] == gt["bbox"]
        if i % 2:
            assert mine["segmentation"] == gt["segmentation"]  # untouched
            continue
        a, b = rle_to_mask(mine["segmentation"]), rle_to_mask(gt["segmentation"])
        assert mine["area"] == int(a.sum())
        ious.append((a & b).sum() / (a | b).sum())
    assert np.median(ious) > 0.95 and np.mean(ious) > 0.85, ious
    # the output is a valid ground truth for eval (RLE masks everywhere)
    assert cli("eval", out, chain.results, "--json") == 0
    assert json.loads(capsys.readouterr().out)["segm"]["AP"] > 0.8


def test_memory_from_boxes_only(chain, tmp_path, capsys):
    boxes = _strip_masks(chain.sampled, tmp_path / "refs_boxes.json")
    memory = tmp_path / "memory.ntt"
    assert cli("memory", "build", boxes, "-o", memory, "--preset", "synthetic") == 0
    assert "9 masks made from boxes" in capsys.readouterr().err
    assert cli("predict", memory, chain.test, "-o", tmp_path / "results.json") == 0
    assert cli("eval", chain.test, tmp_path / "results.json", "--json") == 0
    assert json.loads(capsys.readouterr().out)["segm"]["AP"] >= 0.9
