"""A simulated annotator: images labelled one after another, each starting from the engine's prediction with the
memory as it stands, the memory then growing as it does in Label Studio. Shared by the labelling-effort benchmark
(benchmarks/bench_annotation_effort.py) and `ntt replay` (the same figures on a team's own labelled data).

For each image the engine predicts; the annotator keeps predictions that match the ground truth (same class, mask
IoU >= `match_iou`), relabels a prediction that matches an object of another class, deletes the other predictions and
draws the objects nothing found (`CorrectionDiff`). The finished annotation (the ground truth) is fed back as the
configuration says:
- frozen: only the first `first_k` annotated images become references (the first human-labelled tasks);
- online: every finished annotation becomes a reference;
- online+corrections: and the predictions the annotator deleted or relabelled become negative examples;
- online+corrections+calibrated: and per-class thresholds are re-calibrated after each image by leave-one-out on the
  last `calibration_window` labelled images (instead of one global `threshold`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .corrections import CorrectionDiff, LabelledMask, diff_correction

CONFIGS = ("frozen", "online", "online+corrections", "online+corrections+calibrated")
FULL_LOOP = CONFIGS[-1]


@dataclass(frozen=True)
class AnnotatorSettings:
    threshold: float = 0.5  # the global score threshold (and that of classes not calibrated yet)
    match_iou: float = 0.5  # a prediction this close to a ground-truth object is kept (or relabelled)
    first_k: int = 3  # references of the frozen configuration
    calibration_window: int = 20  # labelled images the calibration looks back on


@dataclass
class Sample:
    key: str
    image: Any  # RGB uint8 array
    truths: list[LabelledMask]  # the finished annotation


@dataclass
class Run:
    """One configuration's engine, memory and counts as the images go by."""

    name: str
    engine: Any
    memory: Any
    thresholds: dict[str, float] = field(default_factory=dict)
    edits: list[int] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=lambda: {"deleted": 0, "added": 0, "relabelled": 0, "kept": 0})
    seconds: float = 0.0


def label_one(run: Run, index: int, sample: Sample, settings: AnnotatorSettings,
              history: list[Sample]) -> CorrectionDiff:
    """Predict, let the annotator correct, count the edits, feed the annotation back as `run.name` does; the
    correction made. `history`: the samples labelled so far, this one included (for the calibration)."""
    started = time.perf_counter()
    calibrated = run.name.endswith("calibrated")
    instances = run.engine.predict(sample.image, image_key=sample.key, memory=run.memory,
                                   score_threshold=0.0 if calibrated else settings.threshold,
                                   thresholds=run.thresholds if calibrated else None)
    if calibrated:  # classes not calibrated yet use the global threshold
        instances = [i for i in instances if i.label in run.thresholds or i.score > settings.threshold]
    predicted = [LabelledMask(i.label, i.mask, i.score) for i in instances]
    diff = diff_correction(predicted, sample.truths, match_iou=settings.match_iou)
    run.edits.append(diff.edits)
    for kind in ("deleted", "added", "relabelled", "kept"):
        run.kinds[kind] += len(getattr(diff, kind))
    if run.name != "frozen" or index < settings.first_k:
        negatives = diff.negatives() if "corrections" in run.name else []
        ref = f"ann-{sample.key}"
        if sample.truths or negatives:
            run.engine.add_annotation(ref, sample.image, sample.truths, negatives, sample.key, run.memory)
        else:
            run.engine.add_negative(ref, sample.image, sample.key, run.memory)
    if calibrated:
        run.thresholds = calibrate(run, history[-settings.calibration_window:], settings)
    run.seconds += time.perf_counter() - started
    return diff


def calibrate(run: Run, recent: list[Sample], settings: AnnotatorSettings) -> dict[str, float]:
    from .calibration import calibrate_thresholds, leave_one_out, merge_counts

    observations, missed = [], {}
    for sample in recent:
        if not sample.truths:
            continue
        seen, lost = leave_one_out(run.engine, f"ann-{sample.key}", sample.image, sample.truths, sample.key,
                                   run.memory, settings.match_iou)
        observations += seen
        missed = merge_counts(missed, lost)
    return calibrate_thresholds(observations, missed, default=settings.threshold, labels=run.memory.counts())


def build_runs(config, names: tuple[str, ...] = CONFIGS) -> list[Run]:
    """One engine per configuration (own caches: similarity prompting grows per memory), shared backbones."""
    from .engine import Engine

    first = Engine(config)
    runs = [Run(names[0], first, first.new_memory())]
    for name in names[1:]:
        engine = Engine(config, encoder=first.encoder, proposer=first.proposer)
        runs.append(Run(name, engine, engine.new_memory()))
    return runs
