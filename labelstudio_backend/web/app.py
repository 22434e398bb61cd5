"""The Label Studio ML-backend protocol over Flask 3 (docs/label-studio.md: what Label Studio 1.23 sends).

    GET  /health    {"status": "UP", "model_class": ..., "engine": "ready"|"loading"|...}   (never needs auth)
    POST /setup     {"project": "4.17…", "schema": "<View>…", "extra_params": …} → {"model_version": ...}
    POST /predict   {"tasks": [...], "project": ..., "label_config": ..., "params": {"context": ...}}
                    → {"results": [one prediction per task, in order]}
    POST /webhook   any Label Studio webhook → queued for the background worker, answered at once
    POST /train     Label Studio's legacy "Start training" → resync the project (routes_training.py)
    GET  /versions  (JSON body or ?project=) → {"versions": [model_version, ...]} (routes_training.py)
    GET  /metrics   JSON, or Prometheus text with ?format=prometheus or Accept: text/plain
Overload is answered, never queued without bound: each process admits NTT_MAX_PENDING_PREDICTS /predict requests at
once (default THREADS - 2: one runs, the others wait for the engine) and answers the rest 503 with Retry-After, so
/health, /setup and /webhook always find a free thread; a full event queue and a loading engine are 503s too.
Basic auth (BASIC_AUTH_USER/PASS) guards every route but /health, and /webhook too unless LABEL_STUDIO_API_KEY is
set: then webhook payloads are never trusted (the worker re-reads everything from the API) and Label Studio's
auto-created webhook, which carries no credentials, still gets through.
Bodies are bounded per route (hooks.ROUTE_MAX_BYTES; /webhook: NTT_WEBHOOK_MAX_BYTES) and answered 413 above it,
chunked or not; JSON must be UTF-8 and nest at most labelstudio.strict_json.MAX_DEPTH levels (else 400); non-finite
numbers in it become null.

Routes live in Blueprints, one per concern: routes_ml (/setup, /predict), routes_events (/webhook), routes_training
(/train, /versions), routes_status (/health, /metrics); each reads the Backend from current_app.extensions.
"""
from __future__ import annotations

import logging

from flask import Flask

from labelstudio_backend.learn.sync import Synchronizer
from labelstudio_backend.learn.worker import SyncWorker
from labelstudio_backend.predict.predictor import Predictor
from labelstudio_backend.predict.refresher import Refresher
from labelstudio_backend.runtime import Runtime, limit_malloc_arenas
from labelstudio_backend.settings import Settings
from labelstudio_backend.store.in_flight import PredictsInFlight
from labelstudio_backend.store.journal import EventJournal
from labelstudio_backend.store.selection import open_pending_markers
from labelstudio_backend.web.admission import Admission
from labelstudio_backend.web.backend import EXTENSION, Backend
from labelstudio_backend.web.hooks import max_body_bytes, register_hooks
from labelstudio_backend.web.routes_dashboard import dashboard
from labelstudio_backend.web.routes_events import events
from labelstudio_backend.web.routes_ml import ml
from labelstudio_backend.web.routes_status import status
from labelstudio_backend.web.routes_training import training

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    settings = settings or (runtime.settings if runtime else Settings.from_env())
    configure_logging(settings.log_level)
    if limit_malloc_arenas(settings.malloc_arenas):  # before the request threads exist
        log.debug("malloc arenas capped at %d (NTT_MALLOC_ARENAS)", settings.malloc_arenas)
    backend = _start_backend(settings, runtime or Runtime(settings))
    if settings.preload:
        backend.runtime.start_preload()
    if settings.trusts_payloads:
        log.warning("LABEL_STUDIO_API_KEY is not set: webhook payloads are used as they come%s",
                    "" if settings.auth_enabled else ", and with no basic auth anyone who can reach /webhook can "
                    "change the memory")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes(settings)  # narrowed per route by the hooks
    app.extensions[EXTENSION] = backend
    register_hooks(app, settings, backend.runtime.metrics)
    for blueprint in (status, ml, events, training, dashboard):
        app.register_blueprint(blueprint)
    return app


def _start_backend(settings: Settings, rt: Runtime) -> Backend:
    """The background worker (webhook events → memory) and the refresher (memory change → next tasks' predictions),
    started, with what the routes share."""
    synchronizer = Synchronizer(rt)
    predictor, admission = Predictor(rt), Admission(settings.predict_slots)
    predicts = PredictsInFlight(rt.store.project_dir)
    refresher = Refresher(rt, predictor, settings.refresh_tasks, predicts)
    worker = SyncWorker(synchronizer, rt.metrics, settings.queue_size,
                        open_pending_markers(rt.settings, rt.store, enabled=rt.api is not None),
                        settings.queue_max_bytes, on_change=refresher.notify, store_retry_s=settings.store_retry_s,
                        journal=EventJournal(settings.model_dir))
    worker.start()
    refresher.start()
    return Backend(rt, worker, synchronizer, predictor, admission, refresher, predicts)

