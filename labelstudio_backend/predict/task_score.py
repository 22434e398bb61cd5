"""Per-class score thresholds applied to the engine's instances, and the task-level score Label Studio sorts by.

The prediction-level `score` of a task is the memory's *certainty* about the whole image, in [0, 1]; low means
"label this next". The Data Manager's "Prediction score" column sorts by it (ascending: most useful first), and
"Label Tasks As Displayed" from a view sorted that way serves the tasks in that order ("Label All Tasks" ignores a
view's sorting). (Label Studio's "Uncertainty
sampling" does not help with a live backend: it only considers predictions whose model_version equals the project's,
which Label Studio sets to the backend's title.)
- an instance scored near its class threshold is uncertain: u = 1 - |score - threshold| / UNCERTAIN_BAND (clipped
  at 0), also for candidates just below the threshold, which are not shown;
- certainty = 1 - the largest u on the image;
- an image where nothing scores within the band of any threshold is one the memory does not cover: certainty 0
  (a negative image the annotators confirm as empty leaves the queue once it is annotated).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ntt_engine import Instance

UNCERTAIN_BAND = 0.15  # scores within this distance of a class threshold count as uncertain


@dataclass(frozen=True)
class Thresholds:
    """The score an instance of each class must exceed to be shown (calibrated per class, else `default`)."""

    default: float
    per_class: Mapping[str, float] = field(default_factory=dict)

    def of(self, label: str) -> float:
        return float(self.per_class.get(label, self.default))

    @property
    def floor(self) -> float:
        """The lowest score still worth asking the engine for: the band below the lowest threshold."""
        lowest = min([self.default, *self.per_class.values()])
        return max(0.0, lowest - UNCERTAIN_BAND)


def shown(candidates: Sequence[Instance], thresholds: Thresholds) -> list[Instance]:
    """The instances above their class threshold (the engine's own cut is `score > threshold` too)."""
    return [i for i in candidates if i.score > thresholds.of(i.label)]


def task_certainty(candidates: Sequence[Instance], thresholds: Thresholds) -> float:
    """The prediction-level score of one task (see the module docstring)."""
    uncertainties = [max(0.0, 1.0 - abs(i.score - thresholds.of(i.label)) / UNCERTAIN_BAND) for i in candidates
                     if i.score > thresholds.of(i.label) - UNCERTAIN_BAND]
    if not uncertainties:
        return 0.0
    return round(1.0 - max(uncertainties), 4)
