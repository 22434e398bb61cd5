"""A simulated annotator: images labelled one after another, each starting from the engine's prediction with the
memory as it stands, the memory then growing as it does in Label Studio. Shared by the labelling-effort benchmark
(benchmarks/bench_annotation_effort.py) and `ntt replay` (the same figures on a team's own labelled data).

For each image the engine predicts; the annotator keeps predictions that match the ground truth (same class, mask
IoU >= `match_iou`), redraws a kept mask below `effort.REDRAW_IOU`, relabels a prediction that matches an object of
another class, deletes the other predictions and draws the objects nothing found. Its cost is counted by
`effort.correction_effort`, as the backend's dashboard counts a real annotation. The finished annotation (the
ground truth) is then fed back as the run's `Loop` says:
- frozen-k: only the first k labelled images become references (the first human-labelled tasks);
- online: every finished annotation becomes a reference;
- +corrections: and the predictions the annotator deleted or relabelled become negative examples;
- +calibrated: per-class thresholds re-calibrated after each image by leave-one-out on the last
  `calibration_window` labelled images (instead of one global `threshold`).
Every uncalibrated run also records, per image, what the same memory would have cost at each threshold of
`THRESHOLD_GRID` (`Run.sweep`): a loop whose memory does not depend on its own predictions (frozen, online) gives the edits of any
global threshold from one run, which is how the benchmark picks a threshold on seeds it does not evaluate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from .corrections import CorrectionDiff, LabelledMask, diff_correction
from .effort import OUTCOMES, correction_effort, edits

THRESHOLD_GRID = tuple(round(0.30 + 0.025 * i, 3) for i in range(27))  # 0.30 … 0.95


@dataclass(frozen=True)
class Loop:
    """What one configuration feeds back into its memory."""

    name: str
    first_k: int | None = None  # frozen: only the first k labelled images become references
    corrections: bool = False  # deleted / relabelled predictions become negative examples
    calibrated: bool = False  # per-class thresholds by leave-one-out

    @property
    def frozen(self) -> bool:
        return self.first_k is not None


FULL_LOOP = Loop("online+corrections+calibrated", corrections=True, calibrated=True)
LOOPS = (Loop("frozen-3", first_k=3), Loop("frozen-10", first_k=10), Loop("online"),
         Loop("online+calibrated", calibrated=True), Loop("online+corrections", corrections=True), FULL_LOOP)
CONFIGS = tuple(loop.name for loop in LOOPS)
REPLAY_LOOPS = ("frozen", "online", "online+corrections", "online+corrections+calibrated")


def loop_named(name: str, first_k: int = 3) -> Loop:
    """A loop by name: one of `CONFIGS`, or "frozen" with `first_k` references (`ntt replay --loop`)."""
    if name == "frozen":
        return Loop(f"frozen-{first_k}", first_k=first_k)
    for loop in LOOPS:
        if loop.name == name:
            return loop
    raise ValueError(f"unknown loop {name!r}; choose frozen or one of {', '.join(CONFIGS)}")


@dataclass(frozen=True)
class AnnotatorSettings:
    threshold: float = 0.5  # the global score threshold (and that of classes not calibrated yet)
    match_iou: float = 0.5  # a prediction this close to a ground-truth object is kept (or relabelled)
    calibration_window: int = 20  # labelled images the calibration looks back on
    sweep: Sequence[float] = THRESHOLD_GRID  # thresholds whose edits every run records too ((): none)


@dataclass
class Sample:
    key: str
    image: Any  # RGB uint8 array
    truths: list[LabelledMask]  # the finished annotation


@dataclass
class Run:
    """One configuration's engine, memory and counts as the images go by."""

    loop: Loop
    engine: Any
    memory: Any
    thresholds: dict[str, float] = field(default_factory=dict)
    efforts: list[dict] = field(default_factory=list)  # effort.correction_effort of each image
    sweep: dict[float, list[int]] = field(default_factory=dict)  # threshold → edits of each image
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.loop.name

    @property
    def edits(self) -> list[int]:
        return [edits(record) for record in self.efforts]

    @property
    def kinds(self) -> dict[str, int]:
        return {kind: sum(int(record[kind]) for record in self.efforts) for kind in OUTCOMES}


def label_one(run: Run, index: int, sample: Sample, settings: AnnotatorSettings,
              history: list[Sample]) -> CorrectionDiff:
    """Predict, let the annotator correct, count the effort, feed the annotation back as `run.loop` says; the
    correction made. `history`: the samples labelled so far, this one included (for the calibration)."""
    started = time.perf_counter()
    loop = run.loop
    instances = run.engine.predict(sample.image, image_key=sample.key, memory=run.memory, score_threshold=0.0,
                                   thresholds=run.thresholds if loop.calibrated else None)
    candidates = [LabelledMask(i.label, i.mask, i.score) for i in instances]
    # the global threshold: for every class of an uncalibrated loop, for classes not calibrated yet otherwise
    def shown(threshold: float) -> list[LabelledMask]:
        return [c for c in candidates if (loop.calibrated and c.label in run.thresholds) or c.score > threshold]

    diff = diff_correction(shown(settings.threshold), sample.truths, match_iou=settings.match_iou)
    run.efforts.append(correction_effort(diff))
    if not loop.frozen or index < loop.first_k:
        negatives = diff.negatives() if loop.corrections else []
        ref = f"ann-{sample.key}"
        if sample.truths or negatives:
            run.engine.add_annotation(ref, sample.image, sample.truths, negatives, sample.key, run.memory)
        else:
            run.engine.add_negative(ref, sample.image, sample.key, run.memory)
    if loop.calibrated:
        run.thresholds = calibrate(run, history[-settings.calibration_window:], settings)
    run.seconds += time.perf_counter() - started
    # the counterfactual thresholds, outside the timing: bookkeeping of the benchmark, not a cost of the loop
    for threshold in () if loop.calibrated else settings.sweep:
        other = run.efforts[-1] if threshold == settings.threshold else correction_effort(diff_correction(
            shown(threshold), sample.truths, match_iou=settings.match_iou))
        run.sweep.setdefault(threshold, []).append(edits(other))
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


def cover_classes_first(samples: Sequence[Sample], k: int) -> list[Sample]:
    """The stream with up to `k` images moved to its front, chosen (earliest first) so that together they show
    every class the stream holds if k images can, so a frozen memory of the first k images knows every class; the
    others keep their order."""
    wanted = {t.label for s in samples for t in s.truths}
    chosen: list[int] = []
    seen: set[str] = set()
    while len(chosen) < k and seen != wanted:
        gain, earliest = max(((len({t.label for t in s.truths} - seen), -i) for i, s in enumerate(samples)
                              if i not in chosen), default=(0, 0))
        if gain == 0:
            break
        chosen.append(-earliest)
        seen |= {t.label for t in samples[-earliest].truths}
    return [samples[i] for i in sorted(chosen)] + [s for i, s in enumerate(samples) if i not in chosen]


def build_runs(config, loops: Sequence[Loop] = LOOPS) -> list[Run]:
    """One engine per configuration (own caches: similarity prompting grows per memory), shared backbones."""
    from .engine import Engine

    first = Engine(config)
    runs = [Run(loops[0], first, first.new_memory())]
    for loop in loops[1:]:
        engine = Engine(config, encoder=first.encoder, proposer=first.proposer)
        runs.append(Run(loop, engine, engine.new_memory()))
    return runs
