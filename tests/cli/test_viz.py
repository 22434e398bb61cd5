"""`ntt viz` draws the predicted masks: pixels inside a mask change colour, pixels far from any detection do not."""
from __future__ import annotations

import json

import numpy as np
from cli_helpers import cli
from PIL import Image

from ntt_engine.export import rle_to_mask


def test_overlays_show_the_masks(chain, tmp_path, capsys):
    out = tmp_path / "viz"
    assert cli("viz", chain.results, "--images", chain.test_images, "-o", out, "--score-thr", "0.5") == 0
    assert "ntt: viz: 24 overlays" in capsys.readouterr().err
    assert (out / "contact_sheet.png").is_file()
    results = json.loads(chain.results.read_text())
    meta = json.loads(chain.results.with_name("results.meta.json").read_text())
    checked = 0
    for image in meta["images"][:8]:
        dets = [r for r in results if r["image_id"] == image["id"] and r["score"] >= 0.5]
        if not dets:
            continue
        original = np.asarray(Image.open(chain.test_images / image["file_name"]).convert("RGB")).astype(int)
        overlay = np.asarray(Image.open(out / image["file_name"]).convert("RGB")).astype(int)
        assert overlay.shape == original.shape
        changed = np.abs(overlay - original).sum(-1) > 0
        union = np.zeros(changed.shape, bool)
        for det in dets:
            mask = rle_to_mask(det["segmentation"])
            union |= mask
            assert changed[mask].mean() > 0.97, f"mask of {det['category_id']} not visible in {image['file_name']}"
        # far from every detection (its box, the label above it) nothing is painted
        near = np.zeros(changed.shape, bool)
        for det in dets:
            x, y, w, h = (int(v) for v in det["bbox"])
            near[max(0, y - 20): y + h + 4, max(0, x - 130): x + w + 130] = True
        assert not changed[~near].any()
        assert changed[union].mean() > changed[~union].mean()
        checked += 1
    assert checked >= 4


def test_viz_needs_to_know_the_images(chain, tmp_path, capsys):
    lone = tmp_path / "results.json"
    lone.write_bytes(chain.results.read_bytes())  # no results.meta.json beside it
    assert cli("viz", lone, "-o", tmp_path / "viz") == 2
    err = capsys.readouterr().err
    assert "pass --coco" in err
    assert cli("viz", lone, "--coco", chain.test, "-o", tmp_path / "viz", "--limit", "3", "--sheet", "0") == 0
    assert len(list((tmp_path / "viz").glob("*.png"))) == 3
