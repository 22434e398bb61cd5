"""GET /health (never needs auth) and GET /metrics (JSON, or Prometheus text with ?format=prometheus or
Accept: text/plain): what the backend is doing, per process and per project."""
from __future__ import annotations

import logging
from functools import partial
from typing import Hashable

from flask import Blueprint, Response, jsonify, request

from labelstudio_backend.metrics import project_samples
from labelstudio_backend.predict.thresholds import project_version, threshold_gauges
from labelstudio_backend.report.stats import class_outcomes
from labelstudio_backend.runtime import Runtime
from labelstudio_backend.web.backend import current_backend

log = logging.getLogger(__name__)

MODEL_CLASS = "NoTimeToTrain"

status = Blueprint("status", __name__)


@status.get("/health")
def health():
    rt = current_backend().runtime
    body = {"status": "UP", "model_class": MODEL_CLASS, "engine": rt.engine_status}
    if rt.engine_error:
        body["error"] = rt.engine_error
    return jsonify(body)


@status.get("/metrics")
def metrics():
    backend = current_backend()
    rt = backend.runtime
    stamped = _project_gauges(rt)
    gauges = {"queue_length": backend.worker.pending, "engine": rt.engine_status,
              "projects": [gauge for _, gauge in stamped],
              "predicts_inside": backend.admission.inside, "predict_slots": backend.admission.slots}
    accept = request.headers.get("Accept", "")
    if request.args.get("format") == "prometheus" or ("text/plain" in accept and "json" not in accept):
        samples = [project_samples(gauge) if stamp is None else
                   rt.prometheus_samples.get(gauge["project"], stamp, partial(project_samples, gauge))
                   for stamp, gauge in stamped]
        return Response(rt.metrics.prometheus(gauges, samples), mimetype="text/plain; version=0.0.4")
    return jsonify(rt.metrics.as_dict(gauges))


def _project_gauges(rt: Runtime) -> list[tuple[Hashable | None, dict]]:
    """(the project's stamp, or None when its figures are not cached, its gauges) for each project."""
    if rt.engine_status != "ready":
        return [(None, {"project": p, "revision": None, "references": {}}) for p in rt.store.projects()]
    gauges = []
    for project, stamp in rt.store.stamps().items():
        try:
            gauges.append((stamp, rt.gauges.get(project, stamp, partial(_one_project, rt, project))))
        except Exception as exc:  # noqa: BLE001 - one unreadable project must not hide the others' metrics
            log.error("/metrics: project %d: %s", project, exc)
            gauges.append((None, {"project": project, "revision": None, "references": {}, "error": str(exc)}))
    return gauges


def _one_project(rt: Runtime, project: int) -> dict:
    snap = rt.store.snapshot(project)
    references, active = snap.memory.counts(), snap.memory.active_counts()
    return {"project": project, "revision": snap.memory.revision, "references": references,
            "references_held_back": {label: count - active.get(label, 0) for label, count in references.items()},
            **threshold_gauges(rt, snap),
            "negative_images": len(snap.memory.negative_images),
            "annotations": len(snap.state.annotations),
            "region_outcomes": class_outcomes(snap.state),
            "model_version": project_version(rt.engine(), snap, rt.settings)}
