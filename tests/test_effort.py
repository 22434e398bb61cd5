"""The effort count the dashboard, `ntt replay` and the effort benchmark share (ntt_engine/effort.py): a kept mask
that far off its prediction is redrawn by the annotator, one edit of its own."""
import numpy as np
import pytest

from ntt_engine.corrections import LabelledMask, diff_correction, mask_iou
from ntt_engine.effort import REDRAW_IOU, correction_effort, edits


def _shifted_pair(iou: float) -> tuple[LabelledMask, LabelledMask]:
    """A predicted and a final 'a' mask (100 px wide rows) whose IoU is exactly `iou`: the final one is shorter."""
    predicted = np.zeros((100, 100), bool)
    predicted[:100, :] = True
    final = np.zeros((100, 100), bool)
    final[:round(100 * iou), :] = True
    return LabelledMask("a", predicted, 0.9), LabelledMask("a", final)


@pytest.mark.parametrize("iou, redrawn", [(0.95, 0), (0.85, 1), (0.5, 1)])
def test_a_kept_mask_below_the_redraw_iou_is_one_edit(iou, redrawn):
    predicted, final = _shifted_pair(iou)
    assert mask_iou([predicted.mask], [final.mask])[0, 0] == pytest.approx(iou)
    diff = diff_correction([predicted], [final])
    assert len(diff.kept) == 1 and diff.kept[0].iou == pytest.approx(iou)
    assert diff.edits == 0  # the diff itself: no deletion, addition or relabel
    record = correction_effort(diff)
    assert (record["redrawn"], record["unchanged"]) == (redrawn, 1 - redrawn)
    assert edits(record) == redrawn


def test_the_redraw_iou_is_a_setting_of_the_count():
    predicted, final = _shifted_pair(0.85)
    diff = diff_correction([predicted], [final])
    assert REDRAW_IOU == 0.9
    assert correction_effort(diff, redraw_iou=0.8)["redrawn"] == 0
    assert correction_effort(diff, redraw_iou=0.9)["redrawn"] == 1
