"""The labelling-effort benchmark's bookkeeping on tiny hard sets (the figures themselves live in benchmarks/), and
that each configuration's memory gets only what its name says."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_annotation_effort as bench  # noqa: E402
from ntt_engine.corrections import LabelledMask  # noqa: E402
from ntt_engine.simulation import (LOOPS, AnnotatorSettings, Sample, build_runs, cover_classes_first,  # noqa: E402
                                   label_one, loop_named)


def test_counts_are_consistent_over_seeds_and_shifts(tmp_path, capsys):
    assert bench.main(["--images", "6", "--classes", "2", "--seeds", "0,1", "--tuning-seeds", "7",
                       "--shifts", "0,8", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "annotation_effort_synthetic.json").read_text())
    assert (tmp_path / "annotation_effort_synthetic.png").stat().st_size > 10_000
    assert list(result["shifts"]) == ["0", "8"] and "colour-texture-v2" in result["backbones"]
    for block in result["shifts"].values():
        assert 0.3 <= block["tuned_threshold"] <= 0.95
        assert [s["seed"] for s in block["streams"]] == [0, 1]
        for stream in block["streams"]:
            objects = stream["objects_per_image"]
            assert list(stream["configs"]) == [*bench.CONFIGS, bench.TUNED]
            for name, config in stream["configs"].items():
                assert len(config["per_image"]) == 6 and config["total_edits"] == sum(config["per_image"])
                assert config["per_image"][0] == objects[0]  # empty memory: every object is drawn by hand
                if name == bench.TUNED:
                    assert config["total_edits"] == stream["configs"]["online"]["sweep"][
                        str(block["tuned_threshold"])]
                    continue
                assert config["total_edits"] == config["deleted"] + config["added"] + config["relabelled"] + \
                    config["redrawn"]
                assert config["unchanged"] + config["redrawn"] + config["added"] + config["relabelled"] == \
                    sum(objects)  # every object ends up labelled
            configs = stream["configs"]
            assert configs["frozen-3"]["per_image"][:3] == configs["online"]["per_image"][:3]
            assert configs["online"]["sweep"]["0.5"] == configs["online"]["total_edits"]
            assert configs["online+corrections+calibrated"]["final_thresholds"]
        summary = block["summary"]
        totals = [s["configs"]["online"]["total_edits"] for s in block["streams"]]
        assert summary["online"]["total_edits"] == {"mean": sum(totals) / 2, "min": min(totals), "max": max(totals)}
    assert "tuned threshold" in capsys.readouterr().out


def _square(label: str, y: int, x: int, side: int = 10) -> LabelledMask:
    mask = np.zeros((40, 40), bool)
    mask[y:y + side, x:x + side] = True
    return LabelledMask(label, mask)


def test_classes_first_moves_the_fewest_earliest_images_that_show_every_class():
    samples = [Sample(f"s{i}", None, [_square(label, 0, 0) for label in labels])
               for i, labels in enumerate([["a"], ["a"], [], ["a", "b"], ["c"], ["b"]])]
    assert [s.key for s in cover_classes_first(samples, 3)] == ["s3", "s4", "s0", "s1", "s2", "s5"]
    assert [s.key for s in cover_classes_first(samples, 1)] == ["s3", "s0", "s1", "s2", "s4", "s5"]
    assert cover_classes_first(samples[:3], 3)[0].key == "s0"


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    """Every loop through one tiny hard set."""
    from ntt_engine import EngineConfig
    from ntt_engine.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("loops")
    generate_dataset(root, 7, 2, 3, difficulty="hard", look_alike_shift=0.0)
    samples, _ = bench.load_samples(root)
    samples = cover_classes_first(samples, 3)
    loops = [loop_named("frozen", 2), *LOOPS[2:]]
    runs = build_runs(EngineConfig.preset("synthetic", num_threads=1, encoder="test_colour_texture_v2"), loops)
    settings = AnnotatorSettings(sweep=(0.5, 0.8))
    states = {run.name: [] for run in runs}
    history = []
    for index, sample in enumerate(samples):
        history.append(sample)
        for run in runs:
            label_one(run, index, sample, settings, history)
            states[run.name].append((run.memory.revision, len(run.memory), len(run.memory.negative_examples()),
                                     dict(run.thresholds)))
    return {run.name: run for run in runs}, states


def test_each_loop_feeds_back_only_what_its_name_says(streams):
    runs, states = streams
    frozen = states["frozen-2"]
    assert frozen[1][:2] == frozen[-1][:2] and frozen[0][0] < frozen[1][0]  # unchanged after 2 images
    assert all(negatives == 0 and not thresholds for _, _, negatives, thresholds in frozen + states["online"])
    assert states["online"][-1][0] > states["online"][1][0]  # online keeps learning
    assert all(negatives == 0 for _, _, negatives, _ in states["online+calibrated"])  # calibrated only: no negatives
    assert states["online+calibrated"][-1][3]  # … but per-class thresholds
    assert states["online+corrections"][-1][2] > 0 and not states["online+corrections"][-1][3]
    assert states["online+corrections+calibrated"][-1][2] > 0 and states["online+corrections+calibrated"][-1][3]
    for name in ("frozen-2", "online", "online+corrections"):  # uncalibrated loops record the threshold sweep
        assert set(runs[name].sweep) == {0.5, 0.8} and runs[name].sweep[0.5] == runs[name].edits
    assert not runs["online+calibrated"].sweep


def test_an_unknown_loop_is_refused():
    with pytest.raises(ValueError, match="unknown loop"):
        loop_named("sometimes")
