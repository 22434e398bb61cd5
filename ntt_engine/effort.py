"""What an annotation cost its annotator: the one count that the backend's dashboard, `ntt replay` and the
labelling-effort benchmark all use.

For an annotation that started from a prediction, the diff with that prediction (corrections.diff_correction) says,
per region: kept unchanged, kept but redrawn (IoU between the predicted and the final mask below `redraw_iou`: an
annotator redraws a mask that far off, one edit), relabelled, deleted, or added. An annotation drawn without a
prediction counts every object as added and predicts nothing, so it never moves precision. The backend stores the
record with the annotation (labelstudio_backend/learn/corrections.py) and sums them (report/stats.py).
"""
from __future__ import annotations

from typing import Any, Sequence

from .corrections import CorrectionDiff, LabelledMask

REGION_OUTCOMES = ("predicted", "kept", "deleted", "added")  # what became of predicted regions, per class
REDRAW_IOU = 0.9  # a kept mask below this IoU with its prediction was redrawn: one edit
OUTCOMES = ("unchanged", "redrawn", "relabelled", "deleted", "added")
CLASS_COUNTS = (*REGION_OUTCOMES, "final")  # per class: regions predicted ... final objects


def correction_effort(diff: CorrectionDiff, redraw_iou: float = REDRAW_IOU, lead_time: Any = None,
                      source: str = "correction") -> dict[str, Any]:
    counts = dict.fromkeys(OUTCOMES, 0)
    per_class: dict[str, dict[str, int]] = {}

    def count(label: str, *keys: str) -> None:
        row = per_class.setdefault(label, dict.fromkeys(CLASS_COUNTS, 0))
        for key in keys:
            row[key] += 1

    for kept in diff.kept:
        redrawn = kept.iou < redraw_iou
        counts["redrawn" if redrawn else "unchanged"] += 1
        count(kept.predicted.label, "predicted", "kept", "final")
    for changed in diff.relabelled:
        counts["relabelled"] += 1
        count(changed.predicted.label, "predicted", "deleted")  # wrong for its old class,
        count(changed.final.label, "added", "final")  # missed for its new one
    for region in diff.deleted:
        counts["deleted"] += 1
        count(region.label, "predicted", "deleted")
    for region in diff.added:
        counts["added"] += 1
        count(region.label, "added", "final")
    seconds = float(lead_time) if isinstance(lead_time, (int, float)) and not isinstance(lead_time, bool) \
        and 0 <= lead_time < 1e7 else None
    return {"source": source, **counts, "lead_time": seconds, "per_class": dict(sorted(per_class.items()))}


def drawn_effort(objects: Sequence[LabelledMask], lead_time: Any = None) -> dict[str, Any]:
    """An annotation drawn without a prediction of this backend: every object added by hand."""
    return correction_effort(CorrectionDiff(added=list(objects)), lead_time=lead_time, source="drawn")


def edits(record: dict[str, Any]) -> int:
    """Annotator actions an annotation took: deletions, additions, relabels and redrawn masks."""
    return sum(int(record.get(key, 0)) for key in ("redrawn", "relabelled", "deleted", "added"))
