"""Bad input gives one clear message and a non-zero exit (or a warning with a count), never a traceback."""
from __future__ import annotations

import json
import shutil

import pytest
from cli_helpers import cli, cli_subprocess


def _run(capsys, *argv) -> tuple[int, str]:
    code = cli(*argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _edit(src, dst, change):
    data = json.loads(src.read_text())
    change(data)
    dst.write_text(json.dumps(data))
    return dst


def test_missing_image_in_the_json(chain, tmp_path, capsys):
    def ghost(data):
        data["images"].append({"id": 999, "file_name": "ghost.png", "width": 320, "height": 240})
        data["annotations"].append({**data["annotations"][0], "id": 999, "image_id": 999})
    refs = _edit(chain.sampled, tmp_path / "refs.json", ghost)
    code, err = _run(capsys, "memory", "build", refs, "-o", tmp_path / "m.ntt", "--preset", "synthetic")
    assert code == 2
    assert "1 image listed in" in err and "ghost.png" in err and "--skip-missing" in err
    assert not (tmp_path / "m.ntt").exists()
    code, err = _run(capsys, "memory", "build", refs, "-o", tmp_path / "m.ntt", "--preset", "synthetic",
                     "--skip-missing")
    assert code == 0 and "ghost.png" in err and "skipped (--skip-missing)" in err
    test = _edit(chain.test, tmp_path / "test.json", ghost)
    code, err = _run(capsys, "predict", chain.memory, test, "--images", chain.test_images, "-o", tmp_path / "r.json")
    assert code == 2 and "not found under" in err and "Point --images at the folder" in err


def test_category_id_not_in_categories(chain, tmp_path, capsys):
    def stray(data):
        data["annotations"][1]["category_id"] = 42
    refs = _edit(chain.sampled, tmp_path / "refs.json", stray)
    for argv in (["memory", "build", refs, "-o", tmp_path / "m.ntt", "--preset", "synthetic"],
                 ["sample", refs, "--shots", "1", "-o", tmp_path / "s.json"],
                 ["eval", refs, chain.results]):
        code, err = _run(capsys, *argv)
        assert code == 2
        assert "1 annotation with a category id that is not in 'categories'" in err and "category_id 42" in err


def test_results_for_another_dataset(chain, tmp_path, capsys):
    # same image ids (1..24), other images: the mask sizes give it away
    code, err = _run(capsys, "eval", chain.refs, chain.results)
    assert code == 2 and "was made for another dataset" in err and "240x320" in err
    # image ids that the ground truth does not have
    shifted = tmp_path / "shifted.json"
    shifted.write_text(json.dumps([{**r, "image_id": r["image_id"] + 1000} for r in json.loads(
        chain.results.read_text())]))
    code, err = _run(capsys, "eval", chain.test, shifted)
    assert code == 2 and "was made for another dataset" in err and "1001" in err
    # a category id the ground truth does not have
    recat = tmp_path / "recat.json"
    recat.write_text(json.dumps([{**r, "category_id": 7} for r in json.loads(chain.results.read_text())]))
    code, err = _run(capsys, "eval", chain.test, recat)
    assert code == 2 and "category ids [7] are not categories" in err
    # a dataset passed where the results belong
    code, err = _run(capsys, "eval", chain.test, chain.test)
    assert code == 2 and "is a COCO dataset, not a results list" in err
    code, err = _run(capsys, "eval", chain.test, chain.results, "--classes", "purple_grid")
    assert code == 2 and "--classes ['purple_grid'] are not categories" in err


def test_empty_folder_through_the_entry_point(chain, tmp_path):
    (tmp_path / "empty").mkdir()
    done = cli_subprocess("predict", chain.memory, tmp_path / "empty", "-o", tmp_path / "r.json")
    assert done.returncode == 2
    assert "contains no images" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("ntt predict: error:")


def test_unreadable_files(chain, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    code, err = _run(capsys, "sample", bad, "--shots", "1", "-o", tmp_path / "o.json")
    assert code == 2 and "is not valid JSON (line 1" in err
    code, err = _run(capsys, "memory", "build", tmp_path / "nope.json", "-o", tmp_path / "m.ntt")
    assert code == 2 and "reference file" in err and "does not exist" in err
    fake = tmp_path / "fake.ntt"
    fake.write_bytes(b"not a memory")
    code, err = _run(capsys, "predict", fake, chain.test, "-o", tmp_path / "r.json")
    assert code == 2 and "is not a readable ntt memory file" in err
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": "synthetic", "points_per_sid": 8}))
    code, err = _run(capsys, "predict", chain.memory, chain.test, "-o", tmp_path / "r.json", "--config", config)
    assert code == 2 and "unknown engine settings ['points_per_sid']" in err


def test_memory_classes_must_be_categories(chain, tmp_path, capsys):
    renamed = _edit(chain.test, tmp_path / "test.json",
                    lambda d: d["categories"].__setitem__(0, {"id": 1, "name": "something_else"}))
    code, err = _run(capsys, "predict", chain.memory, renamed, "--images", chain.test_images, "-o", tmp_path / "r.json")
    assert code == 2 and "memory classes ['red_stripes'] are not categories" in err and "--categories" in err


def test_a_corrupt_image_is_a_warning_with_a_count(chain, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("000001.png", "000002.png", "000003.png"):
        shutil.copy(chain.test_images / name, folder / name)
    (folder / "000002.png").write_bytes(b"\x89PNG broken")
    code, err = _run(capsys, "predict", chain.memory, folder, "-o", tmp_path / "r.json")
    assert code == 0
    assert "1 image could not be read and is left out" in err and "cannot decode image" in err
    meta = json.loads((tmp_path / "r.meta.json").read_text())
    assert [i["file_name"] for i in meta["images"]] == ["000001.png", "000003.png"]
    assert meta["failed"][0]["id"] == 2
    assert (tmp_path / "r.json.progress.jsonl").exists()  # kept: a rerun retries the failed image
    shutil.copy(chain.test_images / "000002.png", folder / "000002.png")
    code, err = _run(capsys, "predict", chain.memory, folder, "-o", tmp_path / "r.json")
    assert code == 0 and "resuming: 2 images of 3" in err
    assert {r["image_id"] for r in json.loads((tmp_path / "r.json").read_text())} <= {1, 2, 3}
    assert len(json.loads((tmp_path / "r.meta.json").read_text())["images"]) == 3


@pytest.mark.parametrize("argv", [["predict"], ["memory"], ["eval", "gt.json"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(*argv)
    assert exc.value.code == 2
    assert "usage: ntt" in capsys.readouterr().err
