"""The Label Studio ML-backend protocol over Flask 3 (see LABEL_STUDIO.md §1.5 for what Label Studio 1.23 sends).

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
Bodies are bounded per route (ROUTE_MAX_BYTES; /webhook: NTT_WEBHOOK_MAX_BYTES), answered 413 above it, and JSON
nested deeper than strict_json.MAX_DEPTH is a 400.
"""
from __future__ import annotations

import hmac
import logging
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from labelstudio_backend.web import strict_json
from labelstudio_backend.web.admission import Admission
from labelstudio_backend.predict.thresholds import threshold_gauges
from labelstudio_backend.labelstudio.webhooks import SYNC, EventError, SyncJob, parse_webhook
from labelstudio_backend.store.in_flight import PredictsInFlight, wait_for_events
from labelstudio_backend.labelstudio.label_config import LabelConfigError, parse_label_config
from labelstudio_backend.store.pending_markers import PendingMarkers
from labelstudio_backend.predict.predictor import Predictor
from labelstudio_backend.labelstudio.ids import parse_project_id
from labelstudio_backend.store.projects import ProjectError
from labelstudio_backend.predict.refresher import Refresher
from labelstudio_backend.web.routes_training import register_loop_routes
from labelstudio_backend.runtime import EngineUnavailable, Runtime, limit_malloc_arenas
from labelstudio_backend.settings import Settings
from labelstudio_backend.learn.resync import RESYNC_STALE_S
from labelstudio_backend.learn.sync import Synchronizer
from labelstudio_backend.learn.worker import SyncWorker

log = logging.getLogger(__name__)

MODEL_CLASS = "NoTimeToTrain"
SETUP_ENGINE_WAIT_S = 2.0  # Label Studio gives /setup 3 s
PREDICT_ENGINE_WAIT_S = 60.0  # and /predict 100 s
MiB = 1024 * 1024
# body limits per endpoint (/webhook: settings.webhook_max_bytes); /setup carries one label config, /predict the
# tasks of one batch (their data holds URLs, not images)
ROUTE_MAX_BYTES = {"setup": 1 * MiB, "predict": 64 * MiB, "versions": 1 * MiB}
DEFAULT_MAX_BYTES = 1 * MiB


class BadRequest(ValueError):
    """Answered as 400 {"error": message}."""


@dataclass
class Backend:
    """Everything the routes use; stored in app.extensions["ntt"]."""

    runtime: Runtime
    worker: SyncWorker
    synchronizer: Synchronizer
    predictor: Predictor
    admission: Admission
    refresher: Refresher
    predicts: PredictsInFlight  # /predict requests running, per project, in any process (the refresh waits)


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
    rt = runtime or Runtime(settings)
    synchronizer = Synchronizer(rt)
    predictor, admission = Predictor(rt), Admission(settings.predict_slots)
    predicts = PredictsInFlight(rt.store.project_dir)
    refresher = Refresher(rt, predictor, settings.refresh_tasks, predicts)
    worker = SyncWorker(synchronizer, rt.metrics, settings.queue_size,
                        PendingMarkers(settings.model_dir, enabled=rt.api is not None), settings.queue_max_bytes,
                        on_change=refresher.notify)
    worker.start()
    refresher.start()
    backend = Backend(rt, worker, synchronizer, predictor, admission, refresher, predicts)
    if settings.preload:
        rt.start_preload()
    if settings.trusts_payloads:
        log.warning("LABEL_STUDIO_API_KEY is not set: webhook payloads are used as they come%s",
                    "" if settings.auth_enabled else ", and with no basic auth anyone who can reach /webhook can "
                    "change the memory")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max([settings.webhook_max_bytes, *ROUTE_MAX_BYTES.values()])  # per route below
    app.extensions["ntt"] = backend
    _register_hooks(app, backend)
    _register_routes(app, backend)
    register_loop_routes(app, backend)
    return app


# ------------------------------------------------------------------------------------------------ hooks
def _register_hooks(app: Flask, backend: Backend) -> None:
    settings, metrics = backend.runtime.settings, backend.runtime.metrics

    @app.before_request
    def authenticate() -> Response | None:
        g.started = time.perf_counter()
        # before anything reads the body: werkzeug answers 413 past it, declared or streamed
        request.max_content_length = settings.webhook_max_bytes if request.endpoint == "webhook" else \
            ROUTE_MAX_BYTES.get(request.endpoint, DEFAULT_MAX_BYTES)
        if not settings.auth_enabled or request.endpoint == "health":
            return None
        if request.endpoint == "webhook" and settings.label_studio_api_key:
            return None
        auth = request.authorization
        if auth and auth.type == "basic" and \
                hmac.compare_digest((auth.username or "").encode(), settings.basic_auth_user.encode()) and \
                hmac.compare_digest((auth.password or "").encode(), settings.basic_auth_pass.encode()):
            return None
        response = jsonify(error="authentication required: this ML backend uses basic auth")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="ntt-label"'
        return response

    @app.after_request
    def count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "other"
        metrics.request(route, response.status_code)
        if "started" in g:
            metrics.time(f"route {route}", time.perf_counter() - g.started)
        return response

    def error(status: int, message: str, retry_after: int | None = None) -> Response:
        response = jsonify(error=message)
        response.status_code = status
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        return error(400, str(exc))

    @app.errorhandler(LabelConfigError)
    def bad_config(exc: LabelConfigError):
        return error(400, str(exc))

    @app.errorhandler(EngineUnavailable)
    def engine_unavailable(exc: EngineUnavailable):
        return error(503, str(exc), retry_after=10)

    @app.errorhandler(ProjectError)
    def project_busy(exc: ProjectError):
        return error(503, str(exc), retry_after=10)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("%s %s failed", request.method, request.path)
        return error(500, f"internal error: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------------------ request parsing
def json_body(required: bool = True) -> dict:
    if not request.data:
        if required:
            raise BadRequest("the request needs a JSON object body")
        return {}
    try:
        body = strict_json.loads(request.get_data(cache=True))
    except strict_json.JsonError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object")
    return body


def project_of(value: Any, what: str) -> int:
    try:
        return parse_project_id(value)
    except ValueError:
        raise BadRequest(f"{what} needs 'project' (Label Studio sends \"<id>.<timestamp>\"), got {value!r}") from None


def extra_params(value: Any) -> dict:
    """The ML backend's "Extra params" field: null, a JSON object, or a string holding one."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = strict_json.loads(value)
        except strict_json.JsonError as exc:
            raise BadRequest(f"extra_params is not valid JSON ({exc}): {value[:100]!r}") from None
    if not isinstance(value, dict):
        raise BadRequest("extra_params must be a JSON object, e.g. {\"score_threshold\": 0.6}")
    threshold = value.get("score_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 <= threshold <= 1.0):
        raise BadRequest(f"extra_params.score_threshold must be a number in [0, 1], got {threshold!r}")
    unknown = set(value) - {"score_threshold"}
    if unknown:
        log.debug("extra_params: ignoring unknown keys %s", sorted(unknown))
    return value


# ------------------------------------------------------------------------------------------------ routes
def _register_routes(app: Flask, backend: Backend) -> None:
    rt, worker = backend.runtime, backend.worker

    @app.get("/health")
    def health():
        body = {"status": "UP", "model_class": MODEL_CLASS, "engine": rt.engine_status}
        if rt.engine_error:
            body["error"] = rt.engine_error
        return jsonify(body)

    @app.post("/setup")
    def setup():
        body = json_body()
        project = project_of(body.get("project"), "/setup")
        params = extra_params(body.get("extra_params"))
        schema = body.get("schema")
        if schema is not None and not isinstance(schema, str):
            raise BadRequest(f"/setup 'schema' must be the label config as XML text, got a {type(schema).__name__}")
        engine = rt.wait_engine(SETUP_ENGINE_WAIT_S)
        backend.predicts.expect(project)  # a /predict may follow: the refresh holds off (store/in_flight.py)
        # Label Studio serves the next task right after this answer: let the submit's event reach the memory first
        wait_for_events(worker.activity, rt.metrics, project, rt.settings.setup_wait, "setup")
        snap = rt.store.snapshot(project)
        warning = _schema_problem(schema) if snap.state.label_config else None
        config = rt.label_config(snap.state, schema)
        threshold = params.get("score_threshold")
        if config.xml != snap.state.label_config or threshold != snap.state.score_threshold:
            with rt.store.edit(project) as snap:
                snap.state.label_config = config.xml
                if threshold != snap.state.score_threshold:
                    snap.state.score_threshold = threshold
                    snap.memory.touch()  # model_version changes, so Label Studio re-predicts
                    backend.refresher.notify(project)
        _maybe_resync(backend, project)
        if warning:
            log.warning("project %d: /setup %s", project, warning)
            return jsonify(model_version=engine.version_of(snap.memory), warning=warning)
        return jsonify(model_version=engine.version_of(snap.memory))

    @app.post("/predict")
    def predict():
        admission = backend.admission
        if not admission.try_enter():
            rt.metrics.add("predict_rejected_busy")
            retry = admission.retry_after()
            response = jsonify(error=f"busy: {admission.slots} /predict request(s) are already running or waiting in "
                                     f"this process; retry in {retry} s")
            response.status_code = 503
            response.headers["Retry-After"] = str(retry)
            return response
        started = time.perf_counter()
        try:
            return _predict()
        finally:
            admission.leave(time.perf_counter() - started)

    def _predict():
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
            wait_for_events(worker.activity, rt.metrics, project, rt.settings.predict_wait, "predict")
        snap = rt.store.snapshot(project)  # reloads here when another process changed the memory
        config = rt.label_config(snap.state, body.get("label_config"))
        with backend.predicts.hold(project):
            results = backend.predictor.predict_tasks(snap, config, tasks, params.get("context"))
        return jsonify(results=results)

    @app.post("/webhook")
    def webhook():
        try:
            job = parse_webhook(json_body())
        except EventError as exc:
            raise BadRequest(str(exc)) from None
        if job is None:
            return jsonify(status="ignored")
        # the queue holds what the worker will use: the payload itself, or (API mode) only the ids it re-reads
        job = job.ids_only() if rt.api is not None else dataclasses.replace(job, size_bytes=len(request.data))
        if not worker.submit(job):
            response = jsonify(error="the event queue is full; retry later")
            response.status_code = 503
            response.headers["Retry-After"] = "5"
            return response
        applied = job.project_id is not None and job.action != "START_TRAINING" and \
            worker.activity.wait_project(job.project_id, rt.settings.webhook_wait)  # LS serves the next task after this
        rt.metrics.add("webhooks_answered_applied" if applied else "webhooks_answered_queued")
        return jsonify(status="applied" if applied else "queued", action=job.action, project=job.project_id)

    @app.get("/metrics")
    def metrics():
        gauges = {"queue_length": worker.pending, "engine": rt.engine_status, "projects": _project_gauges(rt),
                  "predicts_inside": backend.admission.inside, "predict_slots": backend.admission.slots}
        wants_text = request.args.get("format") == "prometheus" or (
            "text/plain" in request.headers.get("Accept", "") and "json" not in request.headers.get("Accept", ""))
        if wants_text:
            return Response(rt.metrics.prometheus(gauges), mimetype="text/plain; version=0.0.4")
        return jsonify(rt.metrics.as_dict(gauges))


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


def _project_gauges(rt: Runtime) -> list[dict]:
    if rt.engine_status != "ready":
        return [{"project": p, "revision": None, "references": {}} for p in rt.store.projects()]
    gauges = []
    for project in rt.store.projects():
        try:
            snap = rt.store.snapshot(project)
        except Exception as exc:  # noqa: BLE001 - one unreadable project must not hide the others' metrics
            log.error("/metrics: project %d: %s", project, exc)
            gauges.append({"project": project, "revision": None, "references": {}, "error": str(exc)})
            continue
        gauges.append({"project": project, "revision": snap.memory.revision, "references": snap.memory.counts(),
                       **threshold_gauges(rt, snap),
                       "negative_images": len(snap.memory.negative_images),
                       "annotations": len(snap.state.annotations),
                       "model_version": rt.engine().version_of(snap.memory)})
    return gauges
