"""sample → memory build → predict → eval on the generated dataset with the TEST backbones."""
from __future__ import annotations

import json

from cli_helpers import TEST_IMAGES, cli, cli_subprocess


def test_in_process_chain_reaches_high_ap(chain):
    report = chain.report
    assert report["images"] == TEST_IMAGES
    assert report["segm"]["AP"] >= 0.9, report
    assert report["bbox"]["AP"] >= 0.9, report
    assert set(report["per_class"]) == {"red_stripes", "green_checker", "blue_dots"}
    assert all(row["segm_AP"] >= 0.8 for row in report["per_class"].values()), report["per_class"]
    results = json.loads(chain.results.read_text())
    assert results and {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(results[0])
    # sorted by image, then the engine's order (best score first)
    order = [r["image_id"] for r in results]
    assert order == sorted(order)
    meta = json.loads(chain.results.with_name("results.meta.json").read_text())
    assert len(meta["images"]) == TEST_IMAGES and {c["name"] for c in meta["categories"]} == set(report["per_class"])
    assert not chain.results.with_name("results.json.progress.jsonl").exists()


def test_entry_point_chain_matches_in_process(chain, tmp_path):
    sampled = tmp_path / "refs3.json"
    steps = [
        ["sample", chain.refs, "--shots", "3", "--seed", "33", "-o", sampled],
        ["memory", "build", sampled, "-o", tmp_path / "memory.ntt", "--preset", "synthetic"],
        ["predict", tmp_path / "memory.ntt", chain.test, "-o", tmp_path / "results.json"],
    ]
    for step in steps:
        done = cli_subprocess(*step)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    assert "ntt: predicted 24 images" in done.stderr
    assert "predict: 100%" in done.stderr  # the tqdm bar
    done = cli_subprocess("eval", chain.test, tmp_path / "results.json", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # --json: stdout holds only the JSON
    assert report["segm"]["AP"] >= 0.9
    assert json.loads(sampled.read_text()) == json.loads(chain.sampled.read_text())
    assert (tmp_path / "results.json").read_bytes() == chain.results.read_bytes()


def test_eval_text_table_and_novel_classes(chain, capsys):
    assert cli("eval", chain.test, chain.results) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "segm" in out and "bbox" in out and "blue_dots" in out
    assert cli("eval", chain.test, chain.results, "--classes", "blue_dots", "red_stripes", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["red_stripes", "blue_dots"]
    assert set(report["per_class"]) == {"red_stripes", "blue_dots"}
    assert report["images"] == TEST_IMAGES  # images without those classes stay in the set
    assert report["segm"]["AP"] >= 0.9
