"""`ntt sample`: the paper's k-shot rules (ALGORITHM.md §6.1)."""
from __future__ import annotations

import json

import pytest
from cli_helpers import cli


def _dataset(path):
    images, anns = [], []

    def add(image_id, cat, bbox, crowd=0):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": crowd,
                     "area": bbox[2] * bbox[3], "segmentation": []})

    for i in range(1, 21):
        images.append({"id": i, "file_name": f"{i}.png", "width": 200, "height": 150})
        add(i, 1, [20, 20, 60, 60])  # class 1: valid everywhere
        add(i, 1, [100, 40, 50, 50])  # a second valid instance in the same image
    # class 2: three valid instances, the rest break one rule each
    for i in (1, 2, 3):
        add(i, 2, [40, 40, 40, 40])
    add(4, 2, [40, 40, 31, 60])  # narrower than 32 px
    add(5, 2, [9, 40, 40, 40])  # 9 px from the left border
    add(6, 2, [100, 40, 40, 101])  # bottom edge 9 px from the border (150 - 141)
    add(7, 2, [40, 40, 40, 40], crowd=1)
    add(8, 2, [40, 40, 40, 40])
    add(8, 2, [100, 40, 40, 40])  # same image as the previous: one instance per image per class
    categories = [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}, {"id": 3, "name": "three"}]
    add(9, 3, [5, 5, 10, 10])  # class 3: one tiny instance
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


def _picked(path) -> dict[str, list[int]]:
    data = json.loads(path.read_text())
    return {cat: [a["ann_ids"][0] for a in picks] for cat, picks in data["info"]["sampling"]["selection"].items()}


def test_rules_nesting_and_classes(tmp_path, capsys):
    refs = _dataset(tmp_path / "refs.json")
    sets = {}
    for k in (1, 2, 4):
        out = tmp_path / f"k{k}.json"
        assert cli("sample", refs, "--shots", k, "--seed", 7, "--classes", "one", "two", "-o", out) == 0
        sets[k] = _picked(out)
        data = json.loads(out.read_text())
        by_cat: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            by_cat.setdefault(ann["category_id"], []).append(ann)
        assert {c: len(v) for c, v in by_cat.items()} == {1: k, 2: k}
        for anns in by_cat.values():
            assert len({a["image_id"] for a in anns}) == len(anns)  # one per image per class
        assert {i["id"] for i in data["images"]} == {a["image_id"] for a in data["annotations"]}
        assert [c["name"] for c in data["categories"]] == ["one", "two"]
    for cat in ("1", "2"):  # nested across K for one seed
        assert sets[1][cat] == sets[4][cat][:1] and sets[2][cat] == sets[4][cat][:2]
    anns = {a["id"]: a for a in json.loads(refs.read_text())["annotations"]}
    # class 2 has exactly four valid instances, in images 1, 2, 3 and 8
    assert sorted(anns[i]["image_id"] for i in sets[4]["2"]) == [1, 2, 3, 8]
    # the selection of a class does not depend on which other classes are asked for
    assert cli("sample", refs, "--shots", 4, "--seed", 7, "--classes", "two", "-o", tmp_path / "two.json") == 0
    assert _picked(tmp_path / "two.json")["2"] == sets[4]["2"]
    # another seed, another order
    assert cli("sample", refs, "--shots", 4, "--seed", 8, "--classes", "one", "-o", tmp_path / "s8.json") == 0
    assert _picked(tmp_path / "s8.json")["1"] != sets[4]["1"]


def test_too_few_lists_the_classes_and_rule_any(tmp_path, capsys):
    refs = _dataset(tmp_path / "refs.json")
    capsys.readouterr()
    assert cli("sample", refs, "--shots", 5, "-o", tmp_path / "k5.json") == 2
    err = capsys.readouterr().err
    assert "too few valid instances for 5-shot sampling with --rule paper in 2 classes" in err
    assert "'two' (id 2): 4" in err and "'three' (id 3): 0" in err and "--rule any" in err
    assert "'one'" not in err and "Traceback" not in err
    assert not (tmp_path / "k5.json").exists()
    # --rule any lifts the size and border rules; crowd stays out and one instance per image per class holds
    assert cli("sample", refs, "--shots", 7, "--rule", "any", "--classes", "two", "-o", tmp_path / "any.json") == 0
    anns = {a["id"]: a for a in json.loads(refs.read_text())["annotations"]}
    picked = [anns[i] for i in _picked(tmp_path / "any.json")["2"]]
    assert sorted(a["image_id"] for a in picked) == [1, 2, 3, 4, 5, 6, 8]
    assert cli("sample", refs, "--shots", 8, "--rule", "any", "--classes", "two", "-o", tmp_path / "x.json") == 2
    err = capsys.readouterr().err
    assert "'two' (id 2): 7 usable image(s). Lower --shots, or restrict --classes" in err


@pytest.mark.parametrize("argv, message", [
    (["--shots", "0"], "--shots must be at least 1"),
    (["--shots", "1", "--classes", "nope"], "--classes ['nope'] are not categories"),
])
def test_bad_arguments(tmp_path, capsys, argv, message):
    refs = _dataset(tmp_path / "refs.json")
    assert cli("sample", refs, *argv, "-o", tmp_path / "o.json") == 2
    assert message in capsys.readouterr().err
