"""POST /webhook: any Label Studio webhook, queued for the background worker (learn/worker.py) and answered once its
event is in the memory or after NTT_WEBHOOK_APPLY_WAIT_S, whichever comes first: Label Studio serves the next task
right after it. Without LABEL_STUDIO_API_KEY the payload is used as it comes; with one only the ids are kept and the
worker re-reads everything from the API."""
from __future__ import annotations

import dataclasses

from flask import Blueprint, jsonify

from labelstudio_backend.labelstudio.webhooks import EventError, parse_webhook
from labelstudio_backend.store.journal import JournalError
from labelstudio_backend.web.backend import current_backend
from labelstudio_backend.web.requests import BadRequest, body_bytes, error_response, json_body, retry_later

events = Blueprint("events", __name__)


@events.post("/webhook")
def webhook():
    backend = current_backend()
    rt, worker = backend.runtime, backend.worker
    try:
        job = parse_webhook(json_body())
    except EventError as exc:
        raise BadRequest(str(exc)) from None
    if job is None:
        return jsonify(status="ignored")
    # the queue holds what the worker will use: the payload itself, or (API mode) only the ids it re-reads
    job = backend.synchronizer.queued_form(job) if rt.api is not None else \
        dataclasses.replace(job, size_bytes=len(body_bytes()))
    if job is None:
        return jsonify(status="ignored")
    try:
        accepted = worker.submit(job)
    except JournalError as exc:  # not accepted, so nothing is lost: the sender may try again
        rt.metrics.add("events_refused_unwritable")
        return retry_later(f"{exc}; the event was not accepted (free disk space or fix MODEL_DIR's permissions)", 10)
    if not accepted:
        return retry_later("the event queue is full; retry later", 5)
    applied = job.project_id is not None and not job.is_resync and \
        worker.activity.wait_project(job.project_id, rt.settings.webhook_wait)  # LS serves the next task after this
    if job.outcome.error is not None:  # it ran and failed: say so (the project is flagged for a resync)
        rt.metrics.add("webhooks_answered_failed")
        return error_response(503 if job.outcome.retryable else 500, f"the event could not be applied: "
                              f"{job.outcome.error}; the project is flagged for a resync from Label Studio (see the "
                              "backend's log)", retry_after=10 if job.outcome.retryable else None)
    rt.metrics.add("webhooks_answered_applied" if applied else "webhooks_answered_queued")
    return jsonify(status="applied" if applied else "queued", action=job.action, project=job.project_id)
