"""A small Label Studio REST client: token handling plus the few calls this backend makes.

Label Studio 1.23 personal access tokens are JWT *refresh* tokens: each is exchanged at `POST /api/token/refresh/`
for a short-lived access token sent as `Authorization: Bearer <access>` (cached until shortly before it expires,
refreshed again on a 401). Legacy tokens (40 hex chars) are sent as `Authorization: Token <key>`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

import jwt
import requests

from labelstudio_backend.labelstudio.ids import integer_id
from labelstudio_backend.labelstudio import strict_json

log = logging.getLogger(__name__)

_REFRESH_MARGIN_S = 30.0


class LabelStudioAPIError(RuntimeError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _claims(token: str) -> dict | None:
    if token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.InvalidTokenError:
        return None
    return claims if isinstance(claims, dict) else None


class LabelStudioAPI:
    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0, session: requests.Session | None = None):
        if not base_url:
            raise LabelStudioAPIError("LABEL_STUDIO_URL is not set: the backend cannot reach Label Studio's API")
        if not api_key:
            raise LabelStudioAPIError("LABEL_STUDIO_API_KEY is not set: create a personal access token in Label "
                                      "Studio (Account & Settings → Personal Access Token)")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.session = session or requests.Session()
        self._lock = threading.Lock()
        self._access: str | None = None
        self._access_expires = 0.0
        claims = _claims(api_key)
        self._is_refresh_token = bool(claims and claims.get("token_type") == "refresh")
        self._scheme = "Bearer" if claims else "Token"

    # ----- auth -----
    def auth_headers(self, force_refresh: bool = False) -> dict[str, str]:
        if not self._is_refresh_token:
            return {"Authorization": f"{self._scheme} {self.api_key}"}
        with self._lock:
            if force_refresh or self._access is None or time.time() > self._access_expires - _REFRESH_MARGIN_S:
                self._refresh()
            return {"Authorization": f"Bearer {self._access}"}

    def _refresh(self) -> None:
        url = f"{self.base_url}/api/token/refresh/"
        try:
            response = self.session.post(url, json={"refresh": self.api_key}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise LabelStudioAPIError(f"cannot reach Label Studio at {self.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise LabelStudioAPIError(
                f"Label Studio refused LABEL_STUDIO_API_KEY at {url}: HTTP {response.status_code} "
                f"{response.text[:200]}; create a new personal access token", response.status_code)
        access = (response.json() or {}).get("access")
        if not isinstance(access, str):
            raise LabelStudioAPIError(f"{url} answered without an access token")
        claims = _claims(access) or {}
        self._access = access
        self._access_expires = float(claims.get("exp", time.time() + 300))

    def is_label_studio_url(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.base_url)
        return (a.scheme, a.hostname, a.port or _default_port(a.scheme)) == \
            (b.scheme, b.hostname, b.port or _default_port(b.scheme))

    # ----- transport -----
    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """`path` is relative to LABEL_STUDIO_URL. Retries once with a fresh access token on a 401."""
        url = path if path.startswith("http") else f"{self.base_url}/{path.lstrip('/')}"
        kwargs.setdefault("timeout", self.timeout)
        for attempt in range(2):
            headers = {**kwargs.pop("headers", {}), **self.auth_headers(force_refresh=attempt > 0)}
            try:
                response = self.session.request(method, url, headers=headers, **kwargs)
            except requests.RequestException as exc:
                raise LabelStudioAPIError(f"{method} {url} failed: {exc}") from exc
            if response.status_code != 401 or not self._is_refresh_token or attempt:
                return response
            kwargs["headers"] = {}
        return response

    def _json(self, method: str, path: str, allow_404: bool = False, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if allow_404 and response.status_code == 404:
            return None
        if not 200 <= response.status_code < 300:
            raise LabelStudioAPIError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}",
                                      response.status_code)
        return _parsed(response, f"{method} {path}") if response.content else None

    # ----- calls -----
    def get_annotation(self, annotation_id: int) -> dict | None:
        """None when Label Studio has no such annotation (deleted, or a forged webhook)."""
        return self._json("GET", f"/api/annotations/{int(annotation_id)}/", allow_404=True)

    def get_task(self, task_id: int, project_id: int | None = None) -> dict | None:
        """One task with its data. With the project known, read it through the data-manager list: Label Studio's
        `GET /api/tasks/<id>/` runs a synchronous /predict on the backend for a task without a current prediction
        (when `show_collab_predictions` is on, the default), which would cost one inference per annotation."""
        if project_id is None:
            return self._json("GET", f"/api/tasks/{int(task_id)}/", allow_404=True)
        query = {"filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": int(task_id)}]}}
        body = self._json("GET", "/api/tasks/", params={"project": int(project_id), "fields": "all",
                                                       "query": json.dumps(query)})
        tasks = body.get("tasks", []) if isinstance(body, dict) else (body or [])
        return next((t for t in tasks if t.get("id") == int(task_id)), None)

    def get_project(self, project_id: int) -> dict | None:
        return self._json("GET", f"/api/projects/{int(project_id)}/", allow_404=True)

    def task_annotations(self, task_id: int) -> list[dict]:
        return self._json("GET", f"/api/tasks/{int(task_id)}/annotations/") or []

    def annotations_of(self, task: dict) -> list[dict]:
        """A listed task's annotations with their results (read one by one where the list left them out)."""
        annotations = task.get("annotations")
        if not isinstance(annotations, list):
            if not task.get("total_annotations") and not task.get("cancelled_annotations"):
                return []
            try:
                annotations = self.task_annotations(task["id"])
            except LabelStudioAPIError as exc:
                log.error("task %s: cannot list its annotations: %s", task.get("id"), exc)
                return []
        full = []
        for annotation in annotations:
            if not isinstance(annotation, dict) or integer_id(annotation.get("id")) is None:
                continue
            if "result" not in annotation:  # a list view without results: read the annotation itself
                annotation = self.get_annotation(annotation["id"]) or {}
                if not annotation:
                    continue
            annotation.setdefault("task", task.get("id"))
            full.append(annotation)
        return full

    def iter_tasks(self, project_id: int, page_size: int = 100) -> Iterator[dict]:
        """All tasks of a project with their annotations and predictions (`fields=all`), page by page."""
        page, seen = 1, 0
        while True:
            response = self.request("GET", "/api/tasks/", params={"project": int(project_id), "fields": "all",
                                                                   "page": page, "page_size": page_size})
            if response.status_code == 404 and page > 1:  # past the last page
                return
            if response.status_code != 200:
                raise LabelStudioAPIError(f"listing tasks of project {project_id}: HTTP {response.status_code} "
                                          f"{response.text[:300]}", response.status_code)
            body = _parsed(response, f"listing tasks of project {project_id}")
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            seen += len(tasks)
            total = body.get("total") if isinstance(body, dict) else None
            if not tasks or len(tasks) < page_size or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def create_prediction(self, task_id: int, result: list[dict], score: float, model_version: str) -> dict:
        return self._json("POST", "/api/predictions/", json={"task": int(task_id), "result": result,
                                                              "score": float(score), "model_version": model_version})

    def update_prediction(self, prediction_id: int, result: list[dict], score: float, model_version: str
                          ) -> dict | None:
        """Replace a prediction's content in place (its id, which annotations name as parent_prediction, stays);
        None when it no longer exists."""
        return self._json("PATCH", f"/api/predictions/{int(prediction_id)}/", allow_404=True,
                          json={"result": result, "score": float(score), "model_version": model_version})

    def relabel_prediction(self, prediction_id: int, model_version: str) -> dict | None:
        """Change only a prediction's model_version (its id, result, score and every parent_prediction link stay);
        None when it no longer exists."""
        return self._json("PATCH", f"/api/predictions/{int(prediction_id)}/", allow_404=True,
                          json={"model_version": model_version})

    def model_versions(self, project_id: int) -> dict[str, int]:
        """model_version -> how many of the project's predictions carry it: what Label Studio's version lists show
        (plus the project's own model_version, with 0 when no prediction carries it)."""
        body = self._json("GET", f"/api/projects/{int(project_id)}/model-versions/")
        return {str(k): int(v) for k, v in body.items() if isinstance(v, int)} if isinstance(body, dict) else {}

    def delete_prediction(self, prediction_id: int) -> None:
        response = self.request("DELETE", f"/api/predictions/{int(prediction_id)}/")
        if response.status_code not in (200, 204, 404):
            raise LabelStudioAPIError(f"DELETE /api/predictions/{prediction_id}/: HTTP {response.status_code} "
                                      f"{response.text[:300]}", response.status_code)

    def get_prediction(self, prediction_id: int) -> dict | None:
        return self._json("GET", f"/api/predictions/{int(prediction_id)}/", allow_404=True)

    def unlabelled_tasks(self, project_id: int, limit: int) -> list[dict]:
        """The first `limit` tasks nobody has annotated, by id (Label Studio's sequential label-stream order),
        with their predictions, through the data-manager list (which never calls /predict)."""
        query = {"filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0},
            {"filter": "filter:tasks:cancelled_annotations", "operator": "equal", "type": "Number", "value": 0}]},
            "ordering": ["tasks:id"]}
        body = self._json("GET", "/api/tasks/", params={"project": int(project_id), "fields": "all",
                                                       "page": 1, "page_size": max(1, int(limit)),
                                                       "query": json.dumps(query)})
        tasks = body.get("tasks", []) if isinstance(body, dict) else (body or [])
        return [t for t in tasks if isinstance(t, dict) and not t.get("total_annotations")][:limit]


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _parsed(response: requests.Response, what: str) -> Any:
    """A Label Studio answer's JSON, read as strictly as a webhook body (non-finite numbers become null); an answer
    that is not JSON (an HTML error page from a proxy) is a LabelStudioAPIError like any failed call."""
    try:
        return strict_json.loads(response.content)
    except strict_json.JsonError as exc:
        raise LabelStudioAPIError(f"{what}: Label Studio's answer is not JSON ({exc}): "
                                  f"{response.text[:200]!r}", response.status_code) from None
