"""Per-class score thresholds of a project, from the calibration observations its annotations hold.

Each annotation's record in the project state keeps what it says about scores (learn/corrections.py): the scores of the
predictions the annotator kept (correct) or deleted/relabelled (wrong), or, for an annotation drawn from scratch,
the leave-one-out predictions of its image matched to what was drawn; plus the objects no prediction found. Per
class, the threshold maximising F1 over all of them is used (ntt_engine.calibration); a class without observations
uses DEFAULT_THRESHOLD. Deleting an annotation deletes its record, hence its observations. The thresholds derive
from the project state; model_version names them (store/versions.py), so it moves whenever they do.
An explicit threshold wins: the project's extra_params {"score_threshold": x}, else NTT_SCORE_THRESHOLD.
"""
from __future__ import annotations

import functools
import math
from typing import Any

from labelstudio_backend.predict.task_score import Thresholds
from labelstudio_backend.settings import REGION_FILLS
from labelstudio_backend.store.projects import ProjectState
from labelstudio_backend.store.versions import model_version
from ntt_engine.calibration import ScoreObservation, calibrate_thresholds

DEFAULT_THRESHOLD = 0.5


def explicit_threshold(state: ProjectState, env_threshold: float | None) -> float | None:
    return state.score_threshold if state.score_threshold is not None else env_threshold


def project_thresholds(state: ProjectState, env_threshold: float | None) -> Thresholds:
    explicit = explicit_threshold(state, env_threshold)
    if explicit is not None:
        return Thresholds(float(explicit))
    observations, missed = [], {}
    for record in state.annotations.values():
        observations += [tuple(o) for o in record.observations or [] if _usable(o)]
        for label, count in (record.missed or {}).items():
            missed[label] = missed.get(label, 0) + int(count)
    return Thresholds(DEFAULT_THRESHOLD, _calibrated(tuple(sorted(observations)), tuple(sorted(missed.items()))))


def region_fill(state: ProjectState, settings: Any) -> str:
    """How many controls a predicted object fills ("one" or "all"): extra_params', else NTT_REGION_CONTROLS."""
    return state.region_controls if state.region_controls in REGION_FILLS else settings.region_controls


def project_version(engine: Any, snap: Any, settings: Any) -> str:
    """The model_version of a project's predictions now: engine, memory revision, thresholds and region fill
    (`settings`: the process's Settings, for NTT_SCORE_THRESHOLD and NTT_REGION_CONTROLS)."""
    thresholds = project_thresholds(snap.state, settings.score_threshold)
    return model_version(engine.model_id, snap.memory.revision, thresholds.default, thresholds.per_class,
                         region_fill(snap.state, settings))


def _usable(observation: object) -> bool:
    """(label, score, correct) with a finite score in [0, 1]: a record written before scores were checked at the
    boundary, or edited by hand, may hold others; one of them must not make a project's predictions fail."""
    if not isinstance(observation, (list, tuple)) or len(observation) != 3:
        return False
    score = observation[1]
    return isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score) \
        and 0.0 <= score <= 1.0


@functools.lru_cache(maxsize=256)
def _calibrated(observations: tuple, missed: tuple) -> dict[str, float]:
    found = [ScoreObservation(str(label), float(score), bool(correct)) for label, score, correct in observations]
    return calibrate_thresholds(found, dict(missed), default=DEFAULT_THRESHOLD) if found else {}


def threshold_source(state: ProjectState, env_threshold: float | None) -> str:
    if state.score_threshold is not None:
        return "extra_params"
    if env_threshold is not None:
        return "NTT_SCORE_THRESHOLD"
    return "calibrated"


def threshold_gauges(rt: Any, snap: Any) -> dict[str, Any]:
    """A project's per-class score thresholds for /metrics: every class with references, and where they come from."""
    thresholds = project_thresholds(snap.state, rt.settings.score_threshold)
    labels = sorted(set(snap.memory.counts()) | set(thresholds.per_class))
    negatives = sum(1 for entries in [snap.memory.entries(r) for r in snap.memory.reference_ids()
                                      if r not in snap.memory.negative_images] for e in entries if e.negative)
    return {"thresholds": {label: round(thresholds.of(label), 4) for label in labels},
            "threshold_source": threshold_source(snap.state, rt.settings.score_threshold),
            "calibration_observations": sum(len(r.observations or []) for r in snap.state.annotations.values()),
            "correction_negatives": negatives}
