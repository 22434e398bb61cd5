"""Per-class score thresholds that set themselves from what annotators kept and rejected.

`calibrate_thresholds` picks, per class, the threshold that maximises F1 over scored predictions whose fate is
known (kept = correct, deleted = wrong) plus the objects no prediction found. Observations come from corrections
(`observations_from_diff`) or from leave-one-out on the reference images (`leave_one_out`): predict a labelled
image with the memory minus its own annotation and match the predictions to what the annotator drew.

The caller applies the thresholds: `Engine.predict(..., thresholds=...)` keeps an instance when its score is
≥ its class's threshold (classes without one use `score_threshold`).

    observations, missed = leave_one_out(engine, "ann-7", image, truths)
    thresholds = calibrate_thresholds(observations, missed)           # {"cat": 0.62, ...}
    engine.predict(other_image, thresholds=thresholds)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .corrections import CorrectionDiff, LabelledMask, greedy_pairs, mask_iou

if TYPE_CHECKING:  # the engine imports nothing from here; only the leave-one-out helper drives it
    from .engine import Engine
    from .image_io import ImageSource
    from .memory import MemoryBank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreObservation:
    label: str
    score: float
    correct: bool  # the annotator kept it (or it matched ground truth)


def calibrate_thresholds(observations: Iterable[ScoreObservation], missed: dict[str, int] | None = None,
                         default: float = 0.5, labels: Iterable[str] = ()) -> dict[str, float]:
    """Per class, the score threshold t maximising F1 with TP = correct and score ≥ t, FP = wrong and score ≥ t,
    FN = correct and score < t, plus `missed[label]` objects no prediction found.

    Only cuts between observed scores change F1, so t is the midpoint between the lowest kept score and the
    highest dropped one (a margin on both sides). Ties → the highest threshold (fewer predictions to delete).
    Keeping every observation → min(`default`, the lowest observed score): nothing argues for a stricter cut, and
    a new object scoring a little lower than all so far should still show. Every prediction wrong → midpoint
    between the highest wrong score and 1, i.e. above it. A class with no observations (listed in `labels` or
    `missed`) → `default`.
    """
    by_label: dict[str, list[ScoreObservation]] = {}
    for obs in observations:
        if not np.isfinite(obs.score):
            raise ValueError(f"observation of {obs.label!r} has score {obs.score}; scores must be finite")
        by_label.setdefault(obs.label, []).append(obs)
    missed = dict(missed or {})
    result = {label: float(default) for label in (*labels, *missed)}
    for label, group in by_label.items():
        result[label] = _best_threshold(group, missed.get(label, 0), float(default))
    return dict(sorted(result.items()))


def _best_threshold(group: Sequence[ScoreObservation], missed: int, default: float) -> float:
    scores = np.array([o.score for o in group], np.float64)
    correct = np.array([o.correct for o in group], bool)
    levels = np.unique(scores)[::-1]  # distinct scores, high → low; cut k keeps scores ≥ levels[k]
    positives = int(correct.sum()) + int(missed)
    best_f1, best_cut = -1.0, -1  # cut -1 keeps nothing
    for cut in range(-1, len(levels)):
        kept = scores >= levels[cut] if cut >= 0 else np.zeros_like(correct)
        tp = int((kept & correct).sum())
        fp = int((kept & ~correct).sum())
        f1 = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + (positives - tp))
        if f1 > best_f1 + 1e-12:  # strict: ties keep the earlier (higher) threshold
            best_f1, best_cut = f1, cut
    upper = 1.0 if best_cut < 0 else float(levels[best_cut])
    if best_cut < 0:
        return (float(levels[0]) + upper) / 2 if levels[0] < 1.0 else float(np.nextafter(1.0, 2.0))
    if best_cut == len(levels) - 1:
        return min(default, upper)
    return (upper + float(levels[best_cut + 1])) / 2


def match_to_truth(predicted: Sequence[LabelledMask], truths: Sequence[LabelledMask],
                   match_iou: float = 0.5) -> tuple[list[ScoreObservation], dict[str, int]]:
    """Score observations of `predicted` (correct = matched one-to-one to a truth of the same class with mask
    IoU ≥ `match_iou`, greedy by IoU) and, per class, the truths no prediction matched."""
    iou = mask_iou([p.mask for p in predicted], [t.mask for t in truths])
    same = np.array([[p.label == t.label for t in truths] for p in predicted], bool).reshape(iou.shape)
    pairs = greedy_pairs(iou, match_iou, same)
    matched_p, matched_t = {i for i, _ in pairs}, {j for _, j in pairs}
    observations = [ScoreObservation(p.label, _score(p), i in matched_p) for i, p in enumerate(predicted)]
    missed: dict[str, int] = {t.label: 0 for t in truths}
    for j, truth in enumerate(truths):
        if j not in matched_t:
            missed[truth.label] += 1
    return observations, missed


def observations_from_diff(diff: CorrectionDiff) -> tuple[list[ScoreObservation], dict[str, int]]:
    """What one correction says about the scores: kept predictions were right, deleted and relabelled ones wrong
    (relabelled ones also count as missed objects of the new class, as do added regions)."""
    observations = [ScoreObservation(k.predicted.label, _score(k.predicted), True) for k in diff.kept]
    observations += [ScoreObservation(r.label, _score(r), False) for r in diff.negatives()]
    missed: dict[str, int] = {}
    for region in [r.final for r in diff.relabelled] + list(diff.added):
        missed[region.label] = missed.get(region.label, 0) + 1
    return observations, missed


def merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in counts:
        for label, n in part.items():
            total[label] = total.get(label, 0) + n
    return total


def leave_one_out(engine: "Engine", ref_id: str, image: "ImageSource", truths: Sequence[LabelledMask],
                  image_key: str | None = None, memory: "MemoryBank | None" = None,
                  match_iou: float = 0.5) -> tuple[list[ScoreObservation], dict[str, int]]:
    """Predict a reference image with the memory minus its own annotation `ref_id` and match the predictions to
    its ground truth `truths`. Cheap when the engine still caches the image's analysis (pass `image_key`)."""
    memory = memory if memory is not None else engine.memory
    held_out = memory.without(ref_id)
    instances = engine.predict(image, image_key=image_key, memory=held_out)
    predicted = [LabelledMask(i.label, i.mask, i.score) for i in instances]
    observations, missed = match_to_truth(predicted, truths, match_iou)
    log.debug("leave-one-out %s: %d prediction(s), %d correct, missed %s", ref_id, len(observations),
              sum(o.correct for o in observations), missed)
    return observations, missed


def _score(region: LabelledMask) -> float:
    if region.score is None:
        raise ValueError(f"predicted region {region.region_id or region.label!r} has no score; calibration needs "
                         f"the score each prediction was shown with")
    return float(region.score)
