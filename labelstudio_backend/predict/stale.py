"""At most one prediction of this backend on a task nobody has annotated: the older ones go before a newer one lands.

Label Studio asks /predict for a task of the label stream whenever the task holds no prediction of the version /setup
just returned, and stores the answer beside the task's older predictions: after each submit the next task held two of
this backend's predictions until the background refresh deleted the older (3-8 s in the demo). Here /predict deletes
them itself, before it answers, so the task goes from one to none to one, never two. Only for tasks Label Studio's API
says are unannotated (the predictions an annotation started from are never touched: they hold `parent_prediction`), and
only predictions the API lists on that task (the request body is not trusted with ids to delete).
"""
from __future__ import annotations

import logging
import re
from typing import Any

from labelstudio_backend.labelstudio.client import LabelStudioAPIError
from labelstudio_backend.labelstudio.ids import integer_id

log = logging.getLogger(__name__)


def own_predictions(task: dict, own: re.Pattern) -> list[dict]:
    """This engine's predictions on a task (as Label Studio lists it), oldest first."""
    predictions = task.get("predictions")
    return sorted((p for p in (predictions if isinstance(predictions, list) else [])
                   if isinstance(p, dict) and integer_id(p.get("id")) is not None
                   and own.match(str(p.get("model_version", "")))), key=lambda p: p["id"])


def unannotated(task: dict) -> bool:
    return not task.get("total_annotations") and not task.get("cancelled_annotations")


def retire_superseded(api: Any, project: int, tasks: list[Any], answers: list[dict], own: re.Pattern,
                      metrics: Any) -> int:
    """Delete this backend's predictions of another version on each unannotated task answered; how many went."""
    deleted = 0
    for task, answer in zip(tasks, answers):
        if not isinstance(task, dict) or integer_id(task.get("id")) is None or not unannotated(task):
            continue
        version = answer.get("model_version")
        if not any(p["model_version"] != version for p in own_predictions(task, own)):
            continue  # the body says there is nothing to retire: no API call
        try:
            listed = api.get_task(task["id"], project)
            if listed is None or not unannotated(listed):
                continue
            for older in (p for p in own_predictions(listed, own) if p["model_version"] != version):
                api.delete_prediction(older["id"])
                deleted += 1
        except LabelStudioAPIError as exc:  # the refresh deletes it later
            log.warning("project %d, task %s: cannot delete its superseded prediction: %s", project, task["id"], exc)
    if deleted:
        metrics.add("predictions_superseded_deleted", deleted)
        log.info("project %d: %d superseded prediction(s) of this backend deleted before answering /predict",
                 project, deleted)
    return deleted
