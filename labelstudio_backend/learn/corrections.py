"""A Label Studio annotation → what the memory learns from it (the work behind sync.py's pooling step).

- One object, one reference: the regions of one object drawn with several controls (a brush, a polygon and a box,
  same label, mask IoU ≥ 0.8) count once, the most detailed kept (brush > polygon > box); so do the regions of one
  predicted instance that the annotator accepted (this backend gives all regions of an instance the id prefix
  "<instance>-", and Label Studio keeps region ids).
- Learning from corrections (NTT_LEARN_FROM_CORRECTIONS, on by default): an annotation that started from one of
  this backend's predictions (its `parent_prediction`; without one, the task's own prediction whose region ids the
  annotation kept) is compared with it: predicted objects the annotator deleted become negative examples of their
  class, relabelled ones a negative of the old class and a reference of the new, added ones references. They are
  stored under the annotation's ref id, so deleting the annotation removes them too.
- Calibration observations: each kept prediction is a correct score, each deleted or relabelled one a wrong score
  (predict/thresholds.py turns them into per-class thresholds). An annotation drawn from scratch gives leave-one-out
  observations instead: its image predicted with the memory minus itself, matched to what the annotator drew.
- Not learnt from as corrections, with a log line: a parent prediction that no longer exists or belongs to another
  model; a prediction refreshed in place after the annotator opened the task (they saw an older one); an unedited
  copy of a prediction (Data Manager "Convert predictions to annotations": no lead time, same regions), whose
  regions are references but which teaches no thresholds.
"""
from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from labelstudio_backend.labelstudio.ids import integer_id
from labelstudio_backend.labelstudio.label_config import LabelConfig
from labelstudio_backend.labelstudio.regions import Region, parse_result
from ntt_engine.effort import REDRAW_IOU, correction_effort, drawn_effort
from labelstudio_backend.learn.thumbnails import Thumbnail, region_thumbnails
from labelstudio_backend.store import versions
from ntt_engine import Engine, MemoryBank, PromptSet, ReferenceError
from ntt_engine.calibration import ScoreObservation, leave_one_out, observations_from_diff
from ntt_engine.corrections import CorrectionDiff, LabelledMask, diff_correction, merge_duplicates
from ntt_engine.memory import MemoryEntry

log = logging.getLogger(__name__)

DUPLICATE_IOU = 0.8
KIND = {"brushlabels": "mask", "polygonlabels": "polygon", "rectanglelabels": "box"}
DETAIL = {"mask": 3, "polygon": 2, "box": 1}
INSTANCE_ID = re.compile(r"^([0-9a-f]{10})-\d+$")  # regions of one predicted instance (predict/predictor.py)


def instance_prefix() -> str:
    return uuid.uuid4().hex[:10]


@dataclass(frozen=True)
class IdRegion:
    region: Region
    region_id: str | None
    kind: str
    score: float | None = None


@dataclass
class Learned:
    """What one annotation contributes: memory entries (references, then negatives) and calibration data."""

    entries: list[MemoryEntry] = field(default_factory=list)
    references: int = 0
    negatives: int = 0
    merged: int = 0  # regions that were another control's drawing of an object already counted
    observations: list[ScoreObservation] = field(default_factory=list)
    missed: dict[str, int] = field(default_factory=dict)
    source: str = "drawn"  # "drawn" (no prediction), "correction <id>", or "copy <id>"
    effort: dict = field(default_factory=dict)  # ntt_engine/effort.py
    thumbnails: list[Thumbnail] = field(default_factory=list)  # the dashboard's gallery (learn/thumbnails.py)


def parse_regions(result: Any, config: LabelConfig, image_size: tuple[int, int]) -> tuple[list[IdRegion], list[str]]:
    """Result items → regions with their Label Studio ids; the skipped ones as reasons."""
    parsed, skipped = parse_result(result, config, image_size)
    regions = [IdRegion(region, item.get("id") if isinstance(item.get("id"), str) else None, KIND[item["type"]],
                        item.get("score") if isinstance(item.get("score"), (int, float)) else None)
               for item, region in parsed]
    return regions, skipped


def objects(engine: Engine, image: np.ndarray, regions: list[IdRegion], what: str) -> list[LabelledMask]:
    """One LabelledMask per object: regions of one predicted instance (same id prefix) and overlapping drawings of
    one label are merged, the most detailed drawing kept. Boxes become masks through SAM."""
    groups: dict[str, list[IdRegion]] = {}
    for index, item in enumerate(regions):
        match = INSTANCE_ID.match(item.region_id or "")
        key = f"{match.group(1)}:{item.region.label}" if match else f"#{index}"
        groups.setdefault(key, []).append(item)
    chosen = [(key, max(group, key=lambda r: DETAIL[r.kind])) for key, group in groups.items()]
    boxed = [(key, r) for key, r in chosen if r.region.mask is None]
    masks: dict[str, np.ndarray] = {k: r.region.mask for k, r in chosen if r.region.mask is not None}
    if boxed:
        found = engine.segment(image, PromptSet(boxes=np.array([r.region.box for _, r in boxed], np.float32)))
        for (key, item), instance in zip(boxed, found):
            if instance.mask.any():
                masks[key] = instance.full_mask()  # in the image's pixels, as the drawn regions
            else:
                log.warning("%s: SAM found no object in the %s box %s; skipped", what, item.region.label,
                            [round(v, 1) for v in item.region.box])
    labelled = [LabelledMask(r.region.label, masks[key], r.score, key.split(":", 1)[0] if ":" in key else r.region_id,
                             r.kind) for key, r in chosen if key in masks]
    merged = merge_duplicates(labelled, DUPLICATE_IOU)
    if len(merged) < len(regions):
        log.info("%s: %d region(s) are %d object(s) (one reference per object)", what, len(regions), len(merged))
    return merged


def own_prediction(task: dict | None, annotation: dict, own: re.Pattern, get_prediction) -> tuple[dict | None, str]:
    """The prediction of this backend the annotation started from, or None and why not."""
    predictions = [p for p in ((task or {}).get("predictions") or []) if isinstance(p, dict)]
    parent = integer_id(annotation.get("parent_prediction"))
    if parent is not None:
        prediction = next((p for p in predictions if p.get("id") == parent), None)
        if prediction is None and get_prediction is not None:
            prediction = get_prediction(parent)
            task_id = (task or {}).get("id", annotation.get("task"))
            if prediction is not None and prediction.get("task") != task_id:  # another task's, maybe another project's
                return None, (f"its parent prediction {parent} belongs to task {prediction.get('task')!r}, not to "
                              f"its task {task_id!r}")
        if prediction is None:
            return None, f"its parent prediction {parent} no longer exists"
        if not own.match(str(prediction.get("model_version", ""))):
            return None, (f"its parent prediction {parent} is from model {prediction.get('model_version')!r}, "
                          "not this backend")
        return prediction, ""
    ids = {r.get("id") for r in annotation.get("result") or [] if isinstance(r, dict)}
    shared = [p for p in predictions if own.match(str(p.get("model_version", ""))) and
              ids & {r.get("id") for r in p.get("result") or [] if isinstance(r, dict)}]
    if shared:
        return max(shared, key=lambda p: p.get("id") or 0), ""
    return None, "it did not start from a prediction of this backend"


def _started(annotation: dict) -> datetime | None:
    """When the annotator opened the task: created_at minus the lead time (seconds in the editor)."""
    created = _time(annotation.get("created_at"))
    lead = annotation.get("lead_time")
    if created is None or not isinstance(lead, (int, float)) or lead <= 0:
        return created
    return created - timedelta(seconds=float(lead))


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _changed_after(prediction: dict, moment: datetime | None) -> bool:
    """True when the prediction was replaced in place (predict/refresher.py) after `moment`: updated later than created."""
    created, updated = _time(prediction.get("created_at")), _time(prediction.get("updated_at"))
    try:
        return None not in (moment, created, updated) and updated > created + timedelta(seconds=1) and \
            updated > moment + timedelta(seconds=1)
    except TypeError:  # naive and aware times: cannot tell
        return False


def shares_regions(annotation: dict, prediction: dict) -> bool:
    """The annotation kept regions of this very prediction content: Label Studio keeps a predicted region's id when
    the annotator accepts or edits it, and every prediction names its regions afresh (instance_prefix), so a
    prediction replaced in place after the annotator opened the task shares no id with the annotation. This, not
    `updated_at`, tells a prediction the annotator saw from one refreshed since: relabelling a prediction to the
    archive version (predict/archive.py) moves `updated_at` without changing what it shows."""
    ids = {r.get("id") for r in annotation.get("result") or [] if isinstance(r, dict) and r.get("id")}
    return bool(ids & {r.get("id") for r in prediction.get("result") or [] if isinstance(r, dict)})


def is_copy(annotation: dict, prediction: dict) -> bool:
    """An unedited copy made without the editor (e.g. "Convert predictions to annotations"): no lead time and the
    prediction's regions exactly."""
    if annotation.get("lead_time"):
        return False
    return annotation.get("result") == prediction.get("result")


def pool(engine: Engine, image: np.ndarray, references: list[LabelledMask], negatives: list[LabelledMask],
         what: str) -> tuple[list[MemoryEntry], int, int]:
    """Memory entries (references then negatives); a region that cannot be pooled is skipped with a log line."""
    try:
        return engine.pool_annotation(image, references, negatives), len(references), len(negatives)
    except ReferenceError as exc:
        if len(references) + len(negatives) == 1:
            log.warning("%s: region skipped: %s", what, exc)
            return [], 0, 0
    entries, good = [], [0, 0]
    for kind, regions in ((0, references), (1, negatives)):
        for region in regions:
            try:  # one at a time, so that one unusable region does not sink the others
                entries += engine.pool_annotation(image, [region] if kind == 0 else [],
                                                  [region] if kind == 1 else [])
                good[kind] += 1
            except ReferenceError as exc:
                log.warning("%s: %s region skipped: %s", what, region.label, exc)
    references_first = [e for e in entries if not e.negative] + [e for e in entries if e.negative]
    return references_first, good[0], good[1]


def learn(engine: Engine, image: np.ndarray, config: LabelConfig, annotation: dict, task: dict | None,
          final: list[IdRegion], memory: MemoryBank, ref: str, own: re.Pattern, get_prediction=None,
          learn_from_corrections: bool = True, leave_one_out_observations: bool = True,
          redraw_iou: float = REDRAW_IOU) -> Learned:
    what = f"annotation {annotation.get('id')}"
    final_objects = objects(engine, image, final, what)
    learned = Learned(merged=len(final) - len(final_objects))
    learned.effort = drawn_effort(final_objects, annotation.get("lead_time"))
    references, negatives = final_objects, []
    prediction, why = own_prediction(task, annotation, own, get_prediction) if learn_from_corrections else \
        (None, "learning from corrections is off")
    diff: CorrectionDiff | None = None
    if prediction is not None and _changed_after(prediction, _started(annotation)) and \
            not shares_regions(annotation, prediction):
        why = f"its prediction {prediction.get('id')} was refreshed after the annotator opened the task"
        prediction = None
    if prediction is not None:
        predicted, skipped = parse_regions(prediction.get("result"), config, image.shape[:2])
        predicted_objects = objects(engine, image, [r for r in predicted if r.score is not None], f"{what} parent")
        diff = diff_correction(predicted_objects, final_objects)
        references, negatives = diff.references(), diff.negatives()
        if is_copy(annotation, prediction):
            learned.source = f"copy {prediction.get('id')}"
            log.info("%s is an unedited copy of prediction %s (no time in the editor): its %d region(s) are "
                     "references; it teaches no corrections and no thresholds", what, prediction.get("id"),
                     len(references))
            negatives = []
        else:
            learned.source = f"correction {prediction.get('id')}"
            learned.effort = correction_effort(diff, redraw_iou, annotation.get("lead_time"))
            learned.observations, learned.missed = observations_from_diff(diff)
            log.info("%s corrects prediction %s: %d kept (%d moved), %d deleted, %d relabelled, %d added", what,
                     prediction.get("id"), len(diff.kept), sum(k.moved for k in diff.kept), len(diff.deleted),
                     len(diff.relabelled), len(diff.added))
    else:
        if why and (annotation.get("parent_prediction") is not None or "refreshed" in why):
            log.warning("%s: %s; learning its regions as references only", what, why)
        if leave_one_out_observations and final_objects and len(memory) > 0:
            learned.observations, learned.missed = leave_one_out(engine, ref, image, final_objects, memory=memory)
    learned.entries, learned.references, learned.negatives = pool(engine, image, references, negatives, what)
    try:
        learned.thumbnails = region_thumbnails(image, references, negatives)
    except Exception as exc:  # noqa: BLE001 - pictures for the dashboard: the annotation is still learnt
        log.warning("%s: no gallery thumbnails: %s", what, exc)
    return learned


def empty_annotation_effort(engine: Engine, image: np.ndarray, config: LabelConfig, annotation: dict,
                            task: dict | None, own: re.Pattern, get_prediction=None) -> dict:
    """The effort of an annotation without any object: every region of the prediction it started from deleted
    (none when that prediction was empty too: the model and the annotator agreed), else nothing drawn."""
    prediction, _ = own_prediction(task, annotation, own, get_prediction)
    if prediction is None:
        return drawn_effort([], annotation.get("lead_time"))
    what = f"annotation {annotation.get('id')} parent"
    predicted, _ = parse_regions(prediction.get("result"), config, image.shape[:2])
    predicted_objects = objects(engine, image, [r for r in predicted if r.score is not None], what)
    return correction_effort(diff_correction(predicted_objects, []), lead_time=annotation.get("lead_time"))


def own_version_pattern(engine: Engine) -> re.Pattern:
    return versions.own_version_pattern(engine.model_id)
