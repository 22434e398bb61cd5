"""At most one live prediction of this backend on a task nobody has annotated: the older ones are archived before a
newer one lands.

Label Studio asks /predict for a task of the label stream whenever the task holds no prediction of the version /setup
just returned, and stores the answer beside the task's older predictions: after each submit the next task held two of
this backend's predictions until the background refresh dealt with the older (3-8 s in the demo). Here /predict
relabels them itself, before it answers, to `<engine>.archived` (a PATCH of model_version only), so the task goes from
one live prediction to none to one, never two. Archived, not deleted: another annotator may have the task open with
the older prediction (an overlap of 2 or more, a task opened from the Data Manager, or Label Studio on sqlite serving
one task to two annotators at once), and that editor's submit names it as parent_prediction, which Label Studio
rejects once the prediction is gone. Only for tasks Label Studio's API says are unannotated, and only predictions the
API lists on that task (the request body is not trusted with ids).
"""
from __future__ import annotations

import logging
import re
from typing import Any, Iterable

from labelstudio_backend.labelstudio.client import LabelStudioAPIError
from labelstudio_backend.labelstudio.ids import integer_id
from labelstudio_backend.store.versions import is_archive_version

log = logging.getLogger(__name__)


def own_predictions(task: dict, own: re.Pattern) -> list[dict]:
    """This engine's predictions on a task (as Label Studio lists it), oldest first."""
    predictions = task.get("predictions")
    return sorted((p for p in (predictions if isinstance(predictions, list) else [])
                   if isinstance(p, dict) and integer_id(p.get("id")) is not None
                   and own.match(str(p.get("model_version", "")))), key=lambda p: p["id"])


def live_predictions(task: dict, own: re.Pattern) -> list[dict]:
    """This engine's predictions on a task that are not archived, oldest first."""
    return [p for p in own_predictions(task, own) if not is_archive_version(str(p["model_version"]))]


def archive_predictions(api: Any, prediction_ids: Iterable[int], archive: str, where: str) -> int:
    """Relabel each prediction to `archive` (a PATCH of model_version only); how many were. One that cannot be keeps
    its version, with a log line naming `where` (the next pass or sweep tries again)."""
    archived = 0
    for prediction_id in prediction_ids:
        try:
            api.relabel_prediction(prediction_id, archive)
            archived += 1
        except LabelStudioAPIError as exc:
            log.warning("%s: prediction %s keeps its version: %s", where, prediction_id, exc)
    return archived


def unannotated(task: dict) -> bool:
    return not task.get("total_annotations") and not task.get("cancelled_annotations")


def retire_superseded(api: Any, project: int, tasks: list[Any], answers: list[dict], own: re.Pattern, archive: str,
                      metrics: Any) -> int:
    """Relabel to `archive` this backend's live predictions on each unannotated task answered with a result: the
    answer replaces them. How many were.

    Those of another version come with the request body. One of the answer's own version is not in it (Label Studio
    asks only for a task lacking one), but a refresh in another worker process may have stored one since Label
    Studio read the task: Label Studio would then hold two of one version. So the task's predictions are read from
    the API for every task answered with a result (one GET per task: a prediction costs far more)."""
    retired = 0
    for task, answer in zip(tasks, answers):
        if not isinstance(task, dict) or integer_id(task.get("id")) is None or not unannotated(task):
            continue
        version = answer.get("model_version")
        stored = bool(answer.get("result"))  # Label Studio drops an empty answer: the task keeps what it has
        if not stored and not any(p["model_version"] != version for p in live_predictions(task, own)):
            continue  # the body says there is nothing to retire: no API call
        try:
            listed = api.get_task(task["id"], project)
        except LabelStudioAPIError as exc:  # the refresh retires it later
            log.warning("project %d, task %s: cannot read its predictions: %s", project, task["id"], exc)
            continue
        if listed is not None and unannotated(listed):
            older = [p["id"] for p in live_predictions(listed, own) if stored or p["model_version"] != version]
            retired += archive_predictions(api, older, archive, f"project {project}, task {task['id']}")
    if retired:
        metrics.add("predictions_superseded_archived", retired)
        log.info("project %d: %d superseded prediction(s) of this backend archived before answering /predict",
                 project, retired)
    return retired
