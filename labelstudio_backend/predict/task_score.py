"""Per-class score thresholds applied to the engine's instances, and the task-level score Label Studio sorts by.

The prediction-level `score` of a task is the memory's *certainty* about the whole image, in [0, 1]; low means
"label this next". The Data Manager's "Prediction score" column sorts by it (ascending: most useful first), and
"Label Tasks As Displayed" from a view sorted that way serves the tasks in that order ("Label All Tasks" ignores a
view's sorting). (Label Studio's "Uncertainty sampling" does not help with a live backend: it only considers
predictions whose model_version equals the project's, which Label Studio sets to the backend's title.)
- every detection of the image counts, shown or not (the engine scores each proposal against its best class):
  its *margin* is how far its score lies from its class threshold, as a fraction of the way to the end of that side
  ((score - t) / (1 - t) above the threshold t, (t - score) / t below it): 0 on the threshold, 1 at score 1 or 0;
- certainty = the smallest margin on the image: the least certain object decides (an image with one look-alike
  scored 0.4 against a threshold of 0.5 is uncertain however clear its other objects are);
- an image without any detection (nothing proposed that matches a class at all) is one the memory says nothing
  about: certainty 0, label it next (an empty image the annotators confirm leaves the queue once annotated).
The margin is continuous, so scores spread over [0, 1] and sorting by them orders tasks (on the demo's generated
images and test backbones, which separate classes well, from 0.73 to 0.98).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ntt_engine import Instance


@dataclass(frozen=True)
class Thresholds:
    """The score an instance of each class must exceed to be shown (calibrated per class, else `default`)."""

    default: float
    per_class: Mapping[str, float] = field(default_factory=dict)

    def of(self, label: str) -> float:
        return float(self.per_class.get(label, self.default))

    @property
    def floor(self) -> float:
        """The lowest threshold: the engine builds masks only above it (every score counts for the certainty)."""
        return min([self.default, *self.per_class.values()])


def shown(candidates: Sequence[Instance], thresholds: Thresholds) -> list[Instance]:
    """The instances above their class threshold (the engine's own cut is `score > threshold` too)."""
    return [i for i in candidates if i.score > thresholds.of(i.label)]


def margin(score: float, threshold: float) -> float:
    """How far `score` lies from `threshold`, as a fraction of the way to 1 (above it) or to 0 (below it)."""
    if score > threshold:
        return (score - threshold) / (1.0 - threshold) if threshold < 1.0 else 1.0
    return (threshold - score) / threshold if threshold > 0.0 else 1.0


def task_certainty(scores: Iterable[tuple[str, float]], thresholds: Thresholds) -> float:
    """The prediction-level score of one task from (label, score) of every detection (see the module docstring)."""
    margins = [margin(score, thresholds.of(label)) for label, score in scores]
    if not margins:
        return 0.0
    return round(min(1.0, max(0.0, min(margins))), 4)
