"""The two calls of Label Studio's ML-backend protocol (see docs/label-studio.md for what Label Studio 1.23 sends):

    POST /setup     {"project": "4.17…", "schema": "<View>…", "extra_params": …} → {"model_version": ...}
    POST /predict   {"tasks": [...], "project": ..., "label_config": ..., "params": {"context": ...}}
                    → {"results": [one prediction per task, in order]}

Both first wait (boundedly) for the project's unapplied events, so that the task Label Studio serves next reflects
the submit just made. /predict is admitted NTT_MAX_PENDING_PREDICTS at a time per process; the rest get 503.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, jsonify

from labelstudio_backend.labelstudio.label_config import LabelConfigError, parse_label_config
from labelstudio_backend.labelstudio.webhooks import SYNC, SyncJob
from labelstudio_backend.learn.corrections import own_version_pattern
from labelstudio_backend.learn.resync import RESYNC_STALE_S
from labelstudio_backend.predict.stale import retire_superseded
from labelstudio_backend.predict.thresholds import project_version
from labelstudio_backend.store.in_flight import wait_for_events
from labelstudio_backend.store.versions import archive_version
from labelstudio_backend.web.backend import Backend, current_backend
from labelstudio_backend.web.requests import (
    PREDICT_ENGINE_WAIT_S,
    SETUP_ENGINE_WAIT_S,
    BadRequest,
    extra_params,
    json_body,
    project_of,
    retry_later,
)

log = logging.getLogger(__name__)

ml = Blueprint("ml", __name__)


@ml.post("/setup")
def setup():
    backend = current_backend()
    rt = backend.runtime
    body = json_body()
    project = project_of(body.get("project"), "/setup")
    params = extra_params(body.get("extra_params"))
    schema = body.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise BadRequest(f"/setup 'schema' must be the label config as XML text, got a {type(schema).__name__}")
    engine = rt.wait_engine(SETUP_ENGINE_WAIT_S)
    backend.predicts.expect(project)  # a /predict may follow: the refresh holds off (store/in_flight.py)
    # Label Studio serves the next task right after this answer: let the submit's event reach the memory first
    wait_for_events(backend.worker.activity, rt.metrics, project, rt.settings.setup_wait, "setup")
    snap = rt.store.snapshot(project)
    warning = _schema_problem(schema) if snap.state.label_config else None
    config = rt.label_config(snap.state, schema)
    threshold, fill = params.get("score_threshold"), params.get("region_controls")
    if (config.xml, threshold, fill) != (snap.state.label_config, snap.state.score_threshold,
                                         snap.state.region_controls):
        with rt.store.edit(project) as snap:
            snap.state.label_config = config.xml
            if (threshold, fill) != (snap.state.score_threshold, snap.state.region_controls):
                # the thresholds or the regions drawn, hence model_version, change
                snap.state.score_threshold, snap.state.region_controls = threshold, fill
                backend.refresher.notify(project)
    _maybe_resync(backend, project)
    if warning:
        log.warning("project %d: /setup %s", project, warning)
        return jsonify(model_version=project_version(engine, snap, rt.settings), warning=warning)
    return jsonify(model_version=project_version(engine, snap, rt.settings))


@ml.post("/predict")
def predict():
    backend = current_backend()
    admission = backend.admission
    if not admission.try_enter():
        backend.runtime.metrics.add("predict_rejected_busy")
        retry = admission.retry_after()
        return retry_later(f"busy: {admission.slots} /predict request(s) are already running or waiting in this "
                           f"process; retry in {retry} s", retry)
    started = time.perf_counter()
    try:
        return _predict(backend)
    finally:
        admission.leave(time.perf_counter() - started)


def _predict(backend: Backend):
    rt = backend.runtime
    body = json_body()
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        raise BadRequest("/predict needs 'tasks': a list of Label Studio tasks")
    project_value = body.get("project") or next(
        (t.get("project") for t in tasks if isinstance(t, dict) and t.get("project") is not None), None)
    project = project_of(project_value, "/predict")
    rt.wait_engine(PREDICT_ENGINE_WAIT_S)
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    if not isinstance(params.get("context"), dict):  # a smart-tool click needs SAM only, not the memory
        wait_for_events(backend.worker.activity, rt.metrics, project, rt.settings.predict_wait, "predict")
    snap = rt.store.snapshot(project)  # reloads here when another process changed the memory
    config = rt.label_config(snap.state, body.get("label_config"))
    with backend.predicts.hold(project):
        results = backend.predictor.predict_tasks(snap, config, tasks, params.get("context"))
        if rt.api is not None and not isinstance(params.get("context"), dict):
            # Label Studio stores these beside the tasks' older predictions: those are archived first (stale.py)
            retire_superseded(rt.api, project, tasks, results, own_version_pattern(rt.engine()),
                              archive_version(rt.engine().model_id), rt.metrics)
    return jsonify(results=results)


def _schema_problem(schema: str | None) -> str | None:
    """Why a /setup schema cannot be used (the stored config then goes on serving), or None."""
    if not schema:
        return None
    try:
        parse_label_config(schema)
    except LabelConfigError as exc:
        return f"the label config sent cannot be used ({exc}); the project's stored config is kept"
    return None


def _maybe_resync(backend: Backend, project: int) -> None:
    """With an API key, a project this backend has never synced (new connection, an empty MODEL_DIR, or flagged
    after an interrupted write or a failed event), or whose events died with another process, is read in full from
    Label Studio, once, in the background."""
    rt = backend.runtime
    if rt.api is None:
        return
    orphans = backend.worker.markers.claim_orphans(project) if backend.worker.markers else []
    if orphans:
        log.warning("project %d: events accepted by a process that died before applying them (%s); resyncing from "
                    "Label Studio", project, ", ".join(orphans))
        rt.metrics.add("lost_events_recovered")
        backend.worker.submit(SyncJob(SYNC, project))
        return
    state = rt.store.snapshot(project).state
    if state.synced_at is not None:
        return
    if state.sync_started_at is not None and time.time() - state.sync_started_at < RESYNC_STALE_S:
        return
    backend.worker.submit(SyncJob(SYNC, project))
