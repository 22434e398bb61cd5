"""The correction diff and duplicate merging on constructed masks (no model involved)."""
import numpy as np
import pytest

from ntt_engine.corrections import LabelledMask, diff_correction, mask_iou, merge_duplicates


def box(x0, y0, x1, y1, size=(64, 64)):
    mask = np.zeros(size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def region(label, mask, score=None, region_id=None, kind=None):
    return LabelledMask(label, mask, score, region_id, kind)


def test_mask_iou_matches_hand_computed_values():
    iou = mask_iou([box(0, 0, 10, 10)], [box(0, 0, 10, 10), box(5, 0, 15, 10), box(30, 30, 40, 40)])
    assert iou.shape == (1, 3)
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])
    assert mask_iou([], [box(0, 0, 2, 2)]).shape == (0, 1)
    assert mask_iou([box(0, 0, 10, 10).astype(np.uint8) * 255], [box(0, 0, 10, 5)])[0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="share a size"):
        mask_iou([box(0, 0, 2, 2)], [box(0, 0, 2, 2, size=(32, 16))])
    # one image at its working size and at its original size: compared at the smaller size
    assert mask_iou([box(0, 0, 8, 8, size=(24, 24))], [box(0, 0, 24, 24, size=(72, 72))])[0, 0] == 1.0
    assert mask_iou([box(0, 0, 8, 8, size=(24, 24))], [box(0, 0, 12, 24, size=(72, 72))])[0, 0] == pytest.approx(0.5)


def test_diff_unchanged_deleted_relabelled_moved_added():
    predicted = [
        region("cat", box(0, 0, 20, 20), 0.9),  # accepted as is
        region("cat", box(30, 0, 50, 20), 0.7),  # deleted
        region("cat", box(0, 30, 20, 50), 0.6),  # relabelled to dog
        region("dog", box(30, 30, 50, 50), 0.8),  # moved a little by the annotator
    ]
    final = [
        region("cat", box(0, 0, 20, 20)),
        region("dog", box(0, 30, 20, 50)),
        region("dog", box(32, 32, 52, 52)),
        region("cat", box(55, 0, 64, 10)),  # missed by the prediction
    ]
    diff = diff_correction(predicted, final)
    assert [(k.predicted.score, k.moved) for k in diff.kept] == [(0.9, False), (0.8, True)]
    assert [(r.predicted.label, r.final.label, r.predicted.score) for r in diff.relabelled] == [("cat", "dog", 0.6)]
    assert [d.score for d in diff.deleted] == [0.7]
    assert len(diff.added) == 1 and diff.added[0].label == "cat" and diff.added[0].mask[5, 60]
    assert diff.edits == 3  # one deletion, one addition, one relabel; moving is not an edit
    assert sorted(r.label for r in diff.references()) == ["cat", "cat", "dog", "dog"]
    assert [(r.label, r.score) for r in diff.negatives()] == [("cat", 0.7), ("cat", 0.6)]


def test_region_ids_match_first_even_when_the_mask_moved_far():
    predicted = [region("cat", box(0, 0, 10, 10), 0.9, "r1"), region("cat", box(40, 40, 50, 50), 0.8, "r2")]
    final = [region("cat", box(40, 40, 50, 50), region_id="r1")]  # r1 dragged onto where r2 was; r2 deleted
    diff = diff_correction(predicted, final)
    assert [(k.predicted.region_id, k.moved) for k in diff.kept] == [("r1", True)]
    assert [d.region_id for d in diff.deleted] == ["r2"]
    assert diff.added == []


def test_same_label_match_wins_over_a_better_overlapping_relabel():
    predicted = [region("cat", box(0, 0, 20, 20), 0.9)]
    final = [region("dog", box(0, 0, 20, 20)), region("cat", box(0, 0, 20, 16))]
    diff = diff_correction(predicted, final)
    assert len(diff.kept) == 1 and diff.kept[0].final.label == "cat"
    assert [a.label for a in diff.added] == ["dog"] and diff.relabelled == []


def test_low_overlap_is_a_deletion_plus_an_addition():
    diff = diff_correction([region("cat", box(0, 0, 10, 10), 0.5)], [region("cat", box(6, 0, 16, 10))])
    assert len(diff.deleted) == 1 and len(diff.added) == 1 and diff.kept == []


def test_empty_sides():
    only_final = diff_correction([], [region("cat", box(0, 0, 5, 5))])
    assert len(only_final.added) == 1 and only_final.edits == 1
    only_predicted = diff_correction([region("cat", box(0, 0, 5, 5), 0.4)], [])
    assert len(only_predicted.deleted) == 1 and only_predicted.references() == []


def test_merge_duplicates_keeps_the_most_detailed_of_one_object():
    brush = box(10, 10, 30, 30)
    brush[10, 10] = False
    polygon, rectangle = box(10, 10, 30, 30), box(9, 9, 31, 31)
    regions = [region("cat", rectangle, kind="box"), region("cat", polygon, kind="polygon"),
               region("cat", brush, kind="mask"), region("cat", box(40, 40, 60, 60), kind="box"),
               region("dog", polygon, kind="polygon")]  # same pixels, another label: another object
    merged = merge_duplicates(regions)
    assert [(r.label, r.kind) for r in merged] == [("cat", "mask"), ("cat", "box"), ("dog", "polygon")]
    assert merged[0].mask is brush


def test_merge_duplicates_threshold_and_input_order_tie_break():
    a, b = box(0, 0, 20, 20), box(0, 0, 20, 17)  # IoU 0.85
    assert len(merge_duplicates([region("cat", a), region("cat", b)], iou=0.9)) == 2
    merged = merge_duplicates([region("cat", a, region_id="first"), region("cat", b, region_id="second")])
    assert [r.region_id for r in merged] == ["first"]


def test_merge_duplicates_is_transitive():
    a, b, c = box(0, 0, 20, 20), box(0, 0, 20, 18), box(0, 0, 20, 16)  # a~b 0.9, b~c 0.89, a~c 0.8
    merged = merge_duplicates([region("cat", a, kind="box"), region("cat", b, kind="polygon"),
                               region("cat", c, kind="box")], iou=0.85)
    assert [r.kind for r in merged] == ["polygon"]
