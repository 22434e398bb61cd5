"""What every route needs to read a request and to answer one that cannot be served: the JSON body (strict, bounded
nesting), the project id, the ML backend's extra params, and the error answers (400, and 503 with Retry-After)."""
from __future__ import annotations

import logging
from typing import Any

from flask import Response, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from labelstudio_backend.labelstudio.ids import parse_project_id
from labelstudio_backend.labelstudio import strict_json
from labelstudio_backend.settings import REGION_FILLS

log = logging.getLogger(__name__)

SETUP_ENGINE_WAIT_S = 2.0  # Label Studio gives /setup 3 s
PREDICT_ENGINE_WAIT_S = 60.0  # and /predict 100 s


class BadRequest(ValueError):
    """Answered as 400 {"error": message}."""


def error_response(status: int, message: str, retry_after: int | None = None) -> Response:
    """{"error": message} with `status`, and Retry-After (seconds) when given."""
    response = jsonify(error=message)
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def retry_later(message: str, retry_after: int) -> Response:
    """503: the backend is busy (full queue, no free /predict slot, engine loading); the client retries."""
    return error_response(503, message, retry_after)


def body_bytes() -> bytes:
    """The request body, whole: a body over its route's bound is refused (413) however it is framed."""
    data = request.get_data(cache=True)
    limit = g.get("max_body_bytes")
    if limit is not None and len(data) > limit:
        raise RequestEntityTooLarge(f"the body is larger than this route's {limit} bytes")
    return data


def json_body(required: bool = True) -> dict:
    data = body_bytes()
    if not data:
        if required:
            raise BadRequest("the request needs a JSON object body")
        return {}
    return _json_object(data, "the body")


def project_of(value: Any, what: str) -> int:
    try:
        return parse_project_id(value)
    except ValueError:
        raise BadRequest(f"{what} needs 'project' (Label Studio sends \"<id>.<timestamp>\"), got {value!r}") from None


def extra_params(value: Any) -> dict:
    """The ML backend's "Extra params" field: null, a JSON object, or a string holding one."""
    if value in (None, ""):
        return {}
    value = _json_object(value, "extra_params") if isinstance(value, str) else value
    if not isinstance(value, dict):
        raise BadRequest("extra_params must be a JSON object, e.g. {\"score_threshold\": 0.6}")
    threshold = value.get("score_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 <= threshold <= 1.0):
        raise BadRequest(f"extra_params.score_threshold must be a number in [0, 1], got {threshold!r}")
    fill = value.get("region_controls")
    if fill is not None and fill not in REGION_FILLS:
        raise BadRequest(f"extra_params.region_controls must be \"one\" (one region per object, in the most detailed "
                         f"control) or \"all\" (one in every control offering its label), got {fill!r}")
    unknown = set(value) - {"score_threshold", "region_controls"}
    if unknown:
        log.debug("extra_params: ignoring unknown keys %s", sorted(unknown))
    return value


def _json_object(text: bytes | str, what: str) -> dict:
    try:
        value = strict_json.loads(text)
    except strict_json.JsonError as exc:
        shown = f": {text[:100]!r}" if isinstance(text, str) else ""
        raise BadRequest(f"{what} is not valid JSON ({exc}){shown}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value

