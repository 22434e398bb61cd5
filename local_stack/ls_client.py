"""A small requests client for Label Studio 1.23's API, and its personal-access-token login flow."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import requests

from .procutil import wait_until


class TokenExistsError(RuntimeError):
    """LS 1.23.2 allows one valid personal access token per user: POST /api/token/ answers 409 while one exists
    (it must be revoked through POST /api/token/blacklist/ {"refresh": <token>} first)."""


def login_session(base_url: str, email: str, password: str, timeout: float = 30.0) -> requests.Session:
    """A requests session logged into Label Studio's web UI (session cookie + csrftoken)."""
    s = requests.Session()
    r = s.get(f"{base_url}/user/login/", timeout=timeout)
    r.raise_for_status()
    csrf = s.cookies.get("csrftoken")
    if not csrf:
        raise RuntimeError(f"GET /user/login/ set no csrftoken cookie (status {r.status_code})")
    r = s.post(f"{base_url}/user/login/", data={"csrfmiddlewaretoken": csrf, "email": email, "password": password},
               headers={"Referer": f"{base_url}/user/login/"}, allow_redirects=False, timeout=timeout)
    if r.status_code != 302:
        raise RuntimeError(f"login as {email} failed: POST /user/login/ -> {r.status_code} (expected 302)")
    return s


def create_personal_access_token(base_url: str, email: str, password: str, timeout: float = 30.0) -> str:
    s = login_session(base_url, email, password, timeout)
    csrf = s.cookies.get("csrftoken")
    r = s.post(f"{base_url}/api/token/", headers={"X-CSRFToken": csrf, "Referer": f"{base_url}/"}, json={},
               timeout=timeout)
    if r.status_code == 409:
        raise TokenExistsError(f"{email} already has a personal access token: {r.text[:200]}")
    if r.status_code not in (200, 201) or "token" not in r.json():
        raise RuntimeError(f"POST /api/token/ -> {r.status_code} {r.text[:300]}")
    return r.json()["token"]


def create_user(inviter: "LabelStudioAPI", email: str, password: str, timeout: float = 30.0) -> str:
    """A new member of `inviter`'s organization, signed up through its invite link as a person would (GET /api/invite,
    then the signup form); returns the new user's personal access token."""
    base_url = inviter.base_url
    token = inviter.get("/api/invite")["token"]
    signup = f"{base_url}/user/signup/?token={token}"
    s = requests.Session()
    s.get(signup, timeout=timeout).raise_for_status()
    r = s.post(signup, data={"email": email, "password": password, "csrfmiddlewaretoken": s.cookies.get("csrftoken")},
               headers={"Referer": signup}, allow_redirects=False, timeout=timeout)
    if r.status_code != 302:
        raise RuntimeError(f"signup of {email} failed: POST /user/signup/ -> {r.status_code} (expected 302): "
                           f"{r.text[:300]}")
    return create_personal_access_token(base_url, email, password, timeout)


class APIError(RuntimeError):
    def __init__(self, response: requests.Response):
        self.response = response
        req = response.request
        super().__init__(f"{req.method} {req.url} -> {response.status_code} {response.text[:800]}")


class LabelStudioAPI:
    """The handful of Label Studio API calls the tests and the demo need, with a PAT (Bearer access tokens,
    refreshed on 401)."""

    def __init__(self, base_url: str, pat: str, timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.pat = pat
        self.timeout = timeout
        self.session = requests.Session()
        self._refresh()

    def _refresh(self) -> None:
        r = requests.post(f"{self.base_url}/api/token/refresh/", json={"refresh": self.pat}, timeout=30)
        if r.status_code != 200:
            raise APIError(r)
        self.session.headers["Authorization"] = f"Bearer {r.json()['access']}"

    def request(self, method: str, path: str, expect: Iterable[int] = (200, 201, 204), **kw: Any) -> Any:
        kw.setdefault("timeout", self.timeout)
        url = f"{self.base_url}{path}"
        r = self.session.request(method, url, **kw)
        if r.status_code == 401:
            self._refresh()
            r = self.session.request(method, url, **kw)
        if r.status_code not in tuple(expect):
            raise APIError(r)
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.text

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    # ------------------------------------------------------------------ projects, storage, tasks

    def whoami(self) -> dict:
        return self.get("/api/current-user/whoami")

    def create_project(self, title: str, label_config: str, **fields: Any) -> dict:
        return self.post("/api/projects/", {"title": title, "label_config": label_config, **fields})

    def list_projects(self) -> list[dict]:
        data = self.get("/api/projects/", params={"page_size": 1000})
        return data.get("results", []) if isinstance(data, dict) else data

    def get_project(self, project: int) -> dict:
        return self.get(f"/api/projects/{project}/")

    def create_local_storage(self, project: int, path: str | Path, regex_filter: str = r".*\.(png|jpe?g)$",
                             use_blob_urls: bool = True, title: str = "local files") -> dict:
        return self.post("/api/storages/localfiles/", {
            "project": project, "path": str(path), "regex_filter": regex_filter, "use_blob_urls": use_blob_urls,
            "title": title})

    def sync_local_storage(self, storage: int) -> dict:
        return self.post(f"/api/storages/localfiles/{storage}/sync")

    def import_local_files(self, project: int, path: str | Path, expected: int | None = None,
                           timeout: float = 60.0) -> list[dict]:
        """Create a local-files import storage for `path` (under LOCAL_FILES_DOCUMENT_ROOT), sync it, and return
        the project's tasks once `expected` of them exist (sync may finish in the background)."""
        storage = self.create_local_storage(project, path)
        self.sync_local_storage(storage["id"])
        if expected is None:
            return self.list_tasks(project)
        retries = [3]

        def enough() -> list[dict] | None:
            tasks = self.list_tasks(project)
            if len(tasks) >= expected:
                return tasks
            # with sqlite, a sync that meets another writer fails ("database is locked"): run it again
            if retries[0] and self.get(f"/api/storages/localfiles/{storage['id']}").get("status") == "failed":
                retries[0] -= 1
                self.sync_local_storage(storage["id"])
            return None

        return wait_until(enough, timeout, what=f"{expected} tasks imported into project {project}")

    def list_tasks(self, project: int, page_size: int = 1000) -> list[dict]:
        tasks: list[dict] = []
        page = 1
        while True:
            data = self.get("/api/tasks", params={"project": project, "page": page, "page_size": page_size,
                                                  "fields": "all"}, expect=(200, 404))
            batch = data.get("tasks", []) if isinstance(data, dict) else []
            tasks.extend(batch)
            if len(batch) < page_size:
                return sorted(tasks, key=lambda t: t["id"])
            page += 1

    def get_task(self, task: int) -> dict:
        return self.get(f"/api/tasks/{task}")

    # ------------------------------------------------------------------ annotations

    def create_annotation(self, task: int, result: list[dict], **fields: Any) -> dict:
        return self.post(f"/api/tasks/{task}/annotations/", {"result": result, **fields})

    def update_annotation(self, annotation: int, result: list[dict], **fields: Any) -> dict:
        return self.patch(f"/api/annotations/{annotation}/", {"result": result, **fields})

    def delete_annotation(self, annotation: int) -> None:
        self.delete(f"/api/annotations/{annotation}/")

    def list_annotations(self, task: int) -> list[dict]:
        return self.get(f"/api/tasks/{task}/annotations/")

    # ------------------------------------------------------------------ ML backends and predictions

    def connect_ml_backend(self, project: int, url: str, title: str = "ntt-label", is_interactive: bool = True,
                           **fields: Any) -> dict:
        """POST /api/ml: LS checks /health and /setup, and auto-creates a webhook to <url>/webhook."""
        return self.post("/api/ml", {"project": project, "url": url, "title": title,
                                     "is_interactive": is_interactive, **fields})

    def delete_ml_backend(self, ml: int) -> None:
        self.delete(f"/api/ml/{ml}")

    def get_ml_backend(self, ml: int) -> dict:
        return self.get(f"/api/ml/{ml}")

    def list_ml_backends(self, project: int) -> list[dict]:
        return self.get("/api/ml", params={"project": project})

    def ml_versions(self, ml: int) -> dict:
        return self.get(f"/api/ml/{ml}/versions")

    def train(self, ml: int) -> Any:
        return self.post(f"/api/ml/{ml}/train", {})

    def retrieve_predictions(self, project: int, task_ids: list[int] | None = None) -> dict:
        """The Data Manager's "Retrieve predictions" action (synchronous in LS: it calls /predict in batches)."""
        selected = {"all": False, "included": list(task_ids)} if task_ids is not None else {"all": True,
                                                                                              "excluded": []}
        return self.post("/api/dm/actions", {"selectedItems": selected},
                         params={"id": "retrieve_tasks_predictions", "project": project})

    def next_task(self, project: int) -> dict | None:
        """The label stream's next task for this user, as the editor asks for it (Label Studio calls /setup, and
        /predict when the task has no prediction of the current model_version); None when none is left."""
        task = self.get(f"/api/projects/{project}/next", expect=(200, 404))
        # a 404 answers {"id": <a uuid of the error>, "detail": "There are no tasks for ..."}
        return task if isinstance(task, dict) and isinstance(task.get("id"), int) else None

    def create_prediction(self, task: int, result: list[dict], model_version: str, score: float = 0.5) -> dict:
        return self.post("/api/predictions/", {"task": task, "result": result, "model_version": model_version,
                                               "score": score})

    def list_predictions(self, project: int | None = None, task: int | None = None) -> list[dict]:
        params = {k: v for k, v in (("project", project), ("task", task)) if v is not None}
        return self.get("/api/predictions/", params=params)

    # ------------------------------------------------------------------ webhooks

    def list_webhooks(self, project: int | None = None) -> list[dict]:
        params = {"project": project} if project is not None else None
        return self.get("/api/webhooks/", params=params)

    def update_webhook(self, webhook: int, **fields: Any) -> dict:
        return self.patch(f"/api/webhooks/{webhook}/", fields)

    def delete_webhook(self, webhook: int) -> None:
        self.delete(f"/api/webhooks/{webhook}/")


