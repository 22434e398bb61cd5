"""/train and /versions: what Label Studio's "Start training", "train on submit" and the model-version list call.

- POST /train: Label Studio 1.23.2 sends START_TRAINING to /webhook (a feature flag on by default); with that flag
  off, or from older versions, it posts {"annotations": [tasks with annotations], "project": "<id>.<ts>", ...} to
  /train instead. Both resync the project from Label Studio (API mode); without an API key /train applies the
  annotations of its body (which is all Label Studio sends).
- GET /versions: Label Studio sends no body and no query (its GET drops the JSON it means to send), so without a
  project the answer lists the current model_version (store/versions.py) of every project this
  backend holds, the most recently changed first; with ?project= (or a JSON body), that project's.
"""
from __future__ import annotations

import logging
import time
from functools import partial

from flask import Blueprint, jsonify, request

from labelstudio_backend.labelstudio.webhooks import ANNOTATION_ACTIONS, SYNC, SyncJob
from labelstudio_backend.predict.thresholds import project_version
from labelstudio_backend.store.projects import ProjectSnapshot, ProjectState
from labelstudio_backend.web.backend import current_backend
from labelstudio_backend.web.requests import (SETUP_ENGINE_WAIT_S, BadRequest, body_bytes, json_body, project_of,
                                              retry_later)

log = logging.getLogger(__name__)

training = Blueprint("training", __name__)


@training.post("/train")
def train():
    backend = current_backend()
    rt, worker = backend.runtime, backend.worker
    body = json_body(required=False)
    project = project_of(body.get("project") or request.args.get("project"), "/train")
    resync = rt.api is not None
    if resync:
        job = SyncJob(SYNC, project)
    else:
        # the job holds the body's annotations: counted against NTT_QUEUE_MAX_BYTES like a webhook
        job = _annotations_job(project, body.get("annotations"), size_bytes=len(body_bytes()))
        if job is None:
            return jsonify(status="nothing to do", project=project,
                           message="no annotations in the body, and without LABEL_STUDIO_API_KEY there is "
                                   "nothing to resync from")
    if not worker.submit(job):
        return retry_later("the event queue is full; retry later", 5)
    held = len(rt.store.snapshot(project).state.annotations)
    if resync:
        message = (f"resync of project {project} from Label Studio queued: every annotation is re-read and the memory "
                   f"rebuilt from them ({held} annotation(s) learnt so far); the next tasks' predictions follow")
    else:
        message = (f"{len(job.annotations)} annotation(s) from the request queued for project {project} ({held} "
                   "learnt so far); without LABEL_STUDIO_API_KEY nothing else can be re-read")
    log.info("project %d: /train -> %s", project, message)
    # Label Studio 1.23.2 answers its "Start Training" button with an empty 200 whatever this says; it keeps `job`
    return jsonify(status="resync queued" if resync else "annotations queued", project=project,
                   annotations_learnt=held, queued_annotations=None if resync else len(job.annotations),
                   job=f"ntt-{'resync' if resync else 'train'}-{project}-{int(time.time())}", message=message)


def _annotations_job(project: int, tasks, size_bytes: int) -> SyncJob | None:
    if tasks is None:
        return None
    if not isinstance(tasks, list):
        raise BadRequest("/train: 'annotations' must be a list of tasks with their annotations")
    annotations, by_id = [], {}
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("id"), int):
            continue
        by_id[task["id"]] = task
        for annotation in task.get("annotations") or []:
            if isinstance(annotation, dict) and isinstance(annotation.get("id"), int):
                annotations.append({**annotation, "task": task["id"]})
    if not annotations:
        return None
    return SyncJob(ANNOTATION_ACTIONS[-1], project, tuple(annotations), by_id, size_bytes=size_bytes)


@training.route("/versions", methods=["GET", "POST"])
def versions():
    rt = current_backend().runtime
    body = json_body(required=False)
    value = body.get("project") or request.args.get("project")
    engine = rt.wait_engine(SETUP_ENGINE_WAIT_S)
    if value not in (None, ""):
        snap = rt.store.snapshot(project_of(value, "/versions"))
        return jsonify(versions=[project_version(engine, snap, rt.settings)])
    def version_of(project: int) -> tuple[float, str]:
        snap = rt.store.snapshot(project)
        return snap.state.updated_at, project_version(engine, snap, rt.settings)

    held = [(project, rt.versions.get(project, stamp, partial(version_of, project)))
            for project, stamp in rt.store.stamps().items()]
    by_project = {str(project): version for project, (_, version) in sorted(held, key=lambda h: -h[1][0])}
    empty = ProjectSnapshot(ProjectState(0), engine.new_memory())  # what a project without references serves
    listed = list(dict.fromkeys(by_project.values()))
    return jsonify(versions=listed or [project_version(engine, empty, rt.settings)],
                   engine=engine.model_id, projects=by_project)
