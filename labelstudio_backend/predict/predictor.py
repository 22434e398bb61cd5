"""Tasks → Label Studio predictions, and interactive (smart tool) prompts → SAM masks.

One prediction per task, in order: {"result": [...], "score": the memory's certainty about the image (task_score.py:
low = label it next), "model_version": ...}, with a region per instance in the most detailed output control offering its
label (BrushLabels → brush RLE, else PolygonLabels → polygon, else RectangleLabels → box), or in every such control
with NTT_REGION_CONTROLS=all / extra_params {"region_controls": "all"}. A task whose image cannot be read gets an empty prediction and a log
line; the batch goes on.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from labelstudio_backend.fetch.images import ImageFetchError
from labelstudio_backend.labelstudio.label_config import LabelConfig
from labelstudio_backend.labelstudio.regions import (RegionError, instance_regions, note_region, percent,
                                                     rectangle_to_box)
from labelstudio_backend.learn.corrections import instance_prefix
from labelstudio_backend.predict.task_score import Thresholds, shown, task_certainty
from labelstudio_backend.predict.thresholds import project_thresholds, project_version, region_fill
from labelstudio_backend.runtime import Runtime
from labelstudio_backend.store.projects import ProjectSnapshot
from ntt_engine import Engine, PromptSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    points: np.ndarray  # [n, 2] pixels
    point_labels: np.ndarray  # [n] 1 positive, 0 negative
    boxes: np.ndarray  # [m, 4] xyxy pixels
    label: str | None  # the label the user picked on the smart tool


NOTHING_LEARNT = ("ntt-label has learnt nothing in this project yet: label the objects of a few images (3 per class "
                  "is plenty) and the next tasks arrive pre-labelled.")


def empty_prediction(model_version: str) -> dict:
    return {"result": [], "score": 0.0, "model_version": model_version}


def found_nothing(snap: ProjectSnapshot) -> str:
    counts = snap.memory.counts()
    return (f"ntt-label looked at this image and found no object scoring above its thresholds (memory revision "
            f"{snap.memory.revision}: {sum(counts.values())} reference(s) of {len(counts)} class(es)). Draw what it "
            "missed; submitted with nothing drawn, the image teaches it what none of the classes looks like.")


def with_note(prediction: dict, config: LabelConfig, text: Callable[[], str]) -> dict:
    """A prediction without regions carries `text()` in the config's note TextArea, when it has one: Label Studio
    shows a region-less prediction exactly like no prediction at all. (`text` is called only then.)"""
    if prediction["result"] or config.note is None:
        return prediction
    return {**prediction, "result": [note_region(config.note, text())]}


class Predictor:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def predict_tasks(self, snap: ProjectSnapshot, config: LabelConfig, tasks: list[Any],
                      context: Any = None) -> list[dict]:
        engine = self.rt.engine()
        version = project_version(engine, snap, self.rt.settings)
        if isinstance(context, dict) and tasks:
            interactive = self.interactive(engine, config, tasks[0], context, version)
            if interactive is not None:
                return [interactive] + [empty_prediction(version) for _ in tasks[1:]]
        thresholds = project_thresholds(snap.state, self.rt.settings.score_threshold)
        return [self.predict_task(engine, snap, config, task, thresholds, version) for task in tasks]

    def predict_task(self, engine: Engine, snap: ProjectSnapshot, config: LabelConfig, task: Any,
                     thresholds: Thresholds | float, version: str, strict: bool = False) -> dict:
        """`thresholds`: per class (or one float for all). `strict`: raise ImageFetchError for an unreadable image
        instead of answering an empty prediction."""
        if not isinstance(thresholds, Thresholds):
            thresholds = Thresholds(float(thresholds))
        if not isinstance(task, dict):
            log.warning("a task that is not an object; empty prediction")
            return empty_prediction(version)
        task_id = task.get("id")
        if len(snap.memory) == 0:  # nothing learnt yet: no need to look at the image
            return with_note(empty_prediction(version), config, lambda: NOTHING_LEARNT)
        image = self._image(config, task, strict)
        if image is None:
            return empty_prediction(version)
        started = time.perf_counter()
        try:
            detected = engine.detect(image, score_threshold=thresholds.floor, memory=snap.memory)
        except Exception:  # noqa: BLE001 - one bad image must not fail the whole batch
            log.exception("task %s: prediction failed; empty prediction", task_id)
            self.rt.metrics.add("predict_errors")
            return empty_prediction(version)
        self.rt.metrics.time("predict", time.perf_counter() - started)
        fill = region_fill(snap.state, self.rt.settings)
        result, scores = [], []
        for instance in shown(detected.instances, thresholds):
            controls = config.region_controls(instance.label, fill)
            if not controls:
                continue  # a label removed from the config since it was learnt
            scores.append(instance.score)
            regions = [r for control in controls
                       for r in instance_regions(control, instance.label, instance.mask, instance.bbox, instance.score,
                                                  instance.original_size)]
            prefix = instance_prefix()  # one object: Label Studio keeps these ids when the annotator accepts it
            why = {"text": [explanation(instance, thresholds, snap.state)]}  # the region's Details panel shows it
            result += [{**region, "id": f"{prefix}-{k}", "meta": why} for k, region in enumerate(regions)]
        self.rt.metrics.add("predictions")
        self.rt.metrics.add("predicted_instances", len(scores))
        log.debug("task %s: %d instance(s) in %.2f s", task_id, len(scores), time.perf_counter() - started)
        return with_note({"result": result, "score": task_certainty(detected.scores, thresholds), "model_version": version},
                         config, lambda: found_nothing(snap))

    def _image(self, config: LabelConfig, task: dict, strict: bool = False) -> np.ndarray | None:
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        url = data.get(config.value_key)
        try:
            return self.rt.images.load(url, task.get("id") if isinstance(task.get("id"), int) else None)
        except ImageFetchError as exc:
            if strict:
                raise
            log.error("task %s: cannot read image %r: %s; empty prediction", task.get("id"), config.value_key, exc)
            self.rt.metrics.add("image_errors")
            return None

    # ----- interactive -----
    def interactive(self, engine: Engine, config: LabelConfig, task: Any, context: dict,
                    version: str) -> dict | None:
        """The SAM mask for the smart tool's clicks or box; None when the context holds no prompt."""
        items = context.get("result") if isinstance(context.get("result"), list) else []
        control = config.mask_output()
        if not items or control is None or not isinstance(task, dict):
            return None
        image = self._image(config, task)
        if image is None:
            return empty_prediction(version)
        prompt = parse_prompt(items, image.shape[:2])
        if prompt is None:
            return None
        label = prompt.label if prompt.label in control.labels else (control.labels[0] if control.labels else "")
        if prompt.label and label != prompt.label:
            log.info("interactive: label %r is not in %s %r; using %r", prompt.label, control.tag, control.name,
                     label)
        started = time.perf_counter()
        if len(prompt.boxes):
            found = engine.segment(image, PromptSet(boxes=prompt.boxes))
        elif (prompt.point_labels == 1).any():
            found = engine.segment(image, PromptSet(points=prompt.points, point_labels=prompt.point_labels))
        else:
            found = []
        self.rt.metrics.time("interactive", time.perf_counter() - started)
        self.rt.metrics.add("interactive_requests")
        result, scores = [], []
        for instance in found:
            if instance.mask.any():
                scores.append(instance.score)
                result += instance_regions(control, label, instance.mask, instance.bbox, instance.score,
                                           instance.original_size)
        return {"result": result, "score": round(float(max(scores)), 4) if scores else 0.0,
                "model_version": version}


def explanation(instance: Any, thresholds: Thresholds, state: Any) -> str:
    """Why a region was predicted, for the annotator: its class, its score against the class's threshold, and the
    reference it is most similar to (the Label Studio task it was labelled in)."""
    text = f"{instance.label}: score {instance.score:.2f} (threshold {thresholds.of(instance.label):.2f})"
    if instance.nearest is not None:
        ref, similarity = instance.nearest
        record = state.annotations.get(ref.split(":", 1)[1]) if ref.startswith("annotation:") else None
        where = f"task {record.task_id}" if record is not None and record.task_id is not None else ref
        text += f"; most similar reference: {where} (similarity {similarity:.2f})"
    return text


def parse_prompt(items: list[Any], image_size: tuple[int, int]) -> Prompt | None:
    """Label Studio's context regions (percent) → pixel prompts: keypointlabels clicks (is_positive, default true)
    and rectanglelabels boxes. Malformed items are skipped."""
    height, width = image_size
    points, point_labels, boxes, label = [], [], [], None
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            continue
        kind, value = item.get("type"), item["value"]
        try:
            if kind == "keypointlabels":
                x, y = percent(value.get("x"), "x"), percent(value.get("y"), "y")
                points.append([x * width / 100.0, y * height / 100.0])
                point_labels.append(0 if item.get("is_positive") is False else 1)
            elif kind == "rectanglelabels":
                boxes.append(rectangle_to_box(value, width, height))
            else:
                continue
        except RegionError as exc:
            log.warning("interactive: skipped a %s prompt: %s", kind, exc)
            continue
        names = value.get(kind)
        if label is None and isinstance(names, list) and names and isinstance(names[0], str):
            label = names[0]
    if not points and not boxes:
        return None
    return Prompt(np.asarray(points, np.float32).reshape(-1, 2), np.asarray(point_labels, np.int64),
                  np.asarray(boxes, np.float32).reshape(-1, 4), label)
