"""What runs around every request: body limits per route, basic auth, request counts and timings, and the error
answers (400 for bad input, 503 with Retry-After while the engine loads or a project is busy, JSON for the rest)."""
from __future__ import annotations

import hmac
import logging
import time

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from labelstudio_backend.labelstudio.label_config import LabelConfigError
from labelstudio_backend.metrics import Metrics
from labelstudio_backend.runtime import EngineUnavailable
from labelstudio_backend.settings import Settings
from labelstudio_backend.store.projects import ProjectError
from labelstudio_backend.web.requests import BadRequest, error_response, retry_later

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# body limits per route (/webhook: settings.webhook_max_bytes); /setup carries one label config, /predict the tasks
# of one batch (their data holds URLs, not images)
ROUTE_MAX_BYTES = {"setup": 1 * MiB, "predict": 64 * MiB, "versions": 1 * MiB}
DEFAULT_MAX_BYTES = 1 * MiB


def route_name() -> str:
    """The view's own name ("webhook" for the Blueprint endpoint "events.webhook"); "" when no route matched."""
    return (request.endpoint or "").rsplit(".", 1)[-1]


def max_body_bytes(settings: Settings) -> int:
    """The largest body any route accepts: Flask's global bound, narrowed per route before the body is read."""
    return max([settings.webhook_max_bytes, *ROUTE_MAX_BYTES.values()])


def register_hooks(app: Flask, settings: Settings, metrics: Metrics) -> None:
    @app.before_request
    def limit_and_authenticate() -> Response | None:
        g.started = time.perf_counter()
        route = route_name()
        # before anything reads the body. Werkzeug answers 413 to a declared Content-Length past the bound, but
        # stops reading a streamed (chunked) body there without a word: it may read one byte more, and the body
        # reader (requests.body_bytes) refuses the whole body when it got that byte
        g.max_body_bytes = settings.webhook_max_bytes if route == "webhook" else \
            ROUTE_MAX_BYTES.get(route, DEFAULT_MAX_BYTES)
        request.max_content_length = g.max_body_bytes + 1
        if not settings.auth_enabled or route == "health":
            return None
        if route == "webhook" and settings.label_studio_api_key:
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

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        return error_response(400, str(exc))

    @app.errorhandler(LabelConfigError)
    def bad_config(exc: LabelConfigError):
        return error_response(400, str(exc))

    @app.errorhandler(EngineUnavailable)
    def engine_unavailable(exc: EngineUnavailable):
        return retry_later(str(exc), 10)

    @app.errorhandler(ProjectError)
    def project_busy(exc: ProjectError):
        return retry_later(str(exc), 10)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
