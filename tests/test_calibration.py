"""Per-class threshold calibration: the F1-optimal cut, and the edge cases the backend relies on."""
import numpy as np
import pytest

from ntt_engine.calibration import (ScoreObservation, calibrate_thresholds, match_to_truth, merge_counts,
                                    observations_from_diff)
from ntt_engine.corrections import LabelledMask, diff_correction


def obs(label, *pairs):
    return [ScoreObservation(label, score, correct) for score, correct in pairs]


def box(x0, y0, x1, y1, size=(32, 32)):
    mask = np.zeros(size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def f1_at(observations, threshold, missed=0):
    tp = sum(o.correct and o.score >= threshold for o in observations)
    fp = sum(not o.correct and o.score >= threshold for o in observations)
    fn = sum(o.correct and o.score < threshold for o in observations) + missed
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def test_separable_scores_give_the_midpoint_of_the_gap():
    thresholds = calibrate_thresholds(obs("cat", (0.9, True), (0.8, True), (0.6, False), (0.3, False)))
    assert thresholds == {"cat": pytest.approx(0.7)}


def test_threshold_maximises_f1_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        scores = rng.uniform(0, 1, 12).round(2)
        observations = [ScoreObservation("c", float(s), bool(rng.uniform() < s)) for s in scores]
        missed = int(rng.integers(0, 3))
        t = calibrate_thresholds(observations, {"c": missed})["c"]
        best = max(f1_at(observations, float(s), missed) for s in [*scores, 1.01])
        assert f1_at(observations, t, missed) == pytest.approx(best)


def test_class_with_no_corrections_keeps_the_default():
    thresholds = calibrate_thresholds(obs("cat", (0.9, True)), missed={"dog": 2}, default=0.45, labels=["bird"])
    assert thresholds["dog"] == 0.45 and thresholds["bird"] == 0.45
    assert calibrate_thresholds([], default=0.5) == {}


def test_class_with_every_prediction_rejected_goes_above_its_highest_score():
    thresholds = calibrate_thresholds(obs("dog", (0.72, False), (0.55, False), (0.4, False)), missed={"dog": 1})
    assert thresholds["dog"] > 0.72
    assert calibrate_thresholds(obs("dog", (1.0, False)))["dog"] > 1.0  # nothing can pass


def test_every_prediction_kept_never_raises_the_threshold_above_the_default():
    assert calibrate_thresholds(obs("cat", (0.9, True), (0.35, True)))["cat"] == pytest.approx(0.35)
    assert calibrate_thresholds(obs("cat", (0.99, True), (0.95, True)), default=0.5)["cat"] == 0.5


def test_ties_choose_the_higher_threshold():
    # cutting at 0.8 (tp 1, fp 0, fn 1) and at 0.5 (tp 2, fp 2, fn 0) tie at F1 = 2/3
    observations = obs("cat", (0.8, True), (0.7, False), (0.6, False), (0.5, True))
    assert calibrate_thresholds(observations)["cat"] == pytest.approx(0.75)


def test_match_to_truth_is_one_to_one_and_per_class():
    truths = [LabelledMask("cat", box(0, 0, 10, 10)), LabelledMask("dog", box(20, 20, 30, 30)),
              LabelledMask("dog", box(0, 20, 8, 30))]
    predicted = [LabelledMask("cat", box(0, 0, 10, 10), 0.9), LabelledMask("cat", box(0, 0, 10, 9), 0.8),
                 LabelledMask("cat", box(20, 20, 30, 30), 0.7)]
    observations, missed = match_to_truth(predicted, truths)
    assert [o.correct for o in observations] == [True, False, False]  # duplicate and wrong class are wrong
    assert missed == {"cat": 0, "dog": 2}


def test_observations_from_a_correction():
    predicted = [LabelledMask("cat", box(0, 0, 10, 10), 0.9), LabelledMask("cat", box(20, 0, 30, 10), 0.6),
                 LabelledMask("cat", box(0, 20, 10, 30), 0.55)]
    final = [LabelledMask("cat", box(0, 0, 10, 10)), LabelledMask("dog", box(0, 20, 10, 30)),
             LabelledMask("dog", box(20, 20, 30, 30))]
    observations, missed = observations_from_diff(diff_correction(predicted, final))
    assert sorted((o.score, o.correct) for o in observations) == [(0.55, False), (0.6, False), (0.9, True)]
    assert missed == {"dog": 2}
    assert merge_counts(missed, {"dog": 1, "cat": 1}) == {"dog": 3, "cat": 1}
    with pytest.raises(ValueError, match="no score"):
        observations_from_diff(diff_correction([LabelledMask("cat", box(0, 0, 4, 4))], []))


def test_non_finite_scores_are_refused():
    with pytest.raises(ValueError, match="finite"):
        calibrate_thresholds(obs("cat", (float("nan"), True)))
