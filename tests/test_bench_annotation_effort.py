"""The labelling-effort benchmark's bookkeeping on a tiny hard set (the figures themselves live in benchmarks/)."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_annotation_effort as bench  # noqa: E402


def test_counts_are_consistent_and_the_first_image_is_drawn_by_hand(tmp_path, capsys):
    assert bench.main(["--images", "6", "--classes", "2", "--first-k", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "annotation_effort_synthetic.json").read_text())
    assert (tmp_path / "annotation_effort_synthetic.png").stat().st_size > 10_000
    assert list(result["configs"]) == list(bench.CONFIGS)
    objects = result["objects_per_image"]
    for name, config in result["configs"].items():
        assert len(config["per_image"]) == 6
        assert config["total_edits"] == sum(config["per_image"]) == config["deleted"] + config["added"] + \
            config["relabelled"]
        assert config["per_image"][0] == objects[0]  # empty memory: every object is drawn by hand
        assert config["kept"] + config["added"] + config["relabelled"] == sum(objects)  # every object ends up labelled
    frozen, online = result["configs"]["frozen"], result["configs"]["online"]
    assert frozen["per_image"][:3] == online["per_image"][:3]  # same memory until image first-k + 1
    assert result["configs"]["online+corrections+calibrated"]["final_thresholds"]  # calibrated per class
    assert "frozen" in capsys.readouterr().out

