"""A real Label Studio 1.23.2 server and this backend as separate processes, plus a small API client.

Used by the end-to-end tests (tests/e2e/conftest.py) and by scripts/run_demo.py. Facts this relies on are in
../shared/LABEL_STUDIO.md §1: the headless env vars, the personal-access-token (PAT) flow (login form -> POST
/api/token/ -> refresh -> Bearer access token), "LS silently moves to the next port when busy", and "kill the real
server PID, not a wrapper shell".

Only the standard library and requests: nothing here imports Label Studio (it lives in its own venv, .venv-ls).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import requests

REPO = Path(__file__).resolve().parents[2]
DEFAULT_LS_BIN = REPO / ".venv-ls" / "bin" / "label-studio"
DEFAULT_PYTHON = REPO / ".venv" / "bin" / "python"

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin12345"


class StartError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


def label_studio_bin() -> Path:
    """The Label Studio executable: $NTT_LABEL_STUDIO_BIN, else <repo>/.venv-ls/bin/label-studio."""
    return Path(os.environ.get("NTT_LABEL_STUDIO_BIN") or DEFAULT_LS_BIN)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_ls_port(host: str = "127.0.0.1", tries: int = 50) -> int:
    """A free port whose successor is free too, checked on 127.0.0.1 and "localhost" (what LS itself checks).

    LS moves to port+1 when the port is busy; a port that is free on both names leaves no room for that surprise
    except a race, which `LabelStudioServer.start` detects by probing the port it asked for.
    """
    for _ in range(tries):
        port = free_port(host)
        if not port_in_use(port, "localhost") and not port_in_use(port + 1, host):
            return port
    raise StartError("no free port found")


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group we created, wait (bounded), then SIGKILL it. Never touches other processes."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group was created by start_new_session=True: only our processes
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = "condition",
               proc: subprocess.Popen | None = None, log: Path | None = None) -> Any:
    """Poll `predicate` until it returns something truthy; raise TimeoutError after `timeout` seconds.

    When `proc` exits early the wait stops at once with the log's tail."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a poll may fail until the server is up
            last_exc = exc
        if proc is not None and proc.poll() is not None:
            raise StartError(f"{what}: process exited with code {proc.returncode}\n" + (tail(log) if log else ""))
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{detail}"
                               + ("\n" + tail(log) if log else ""))
        time.sleep(interval)


def _base_env() -> dict[str, str]:
    """A minimal environment: no stray HOST / PORT / USERNAME / PASSWORD (LS reads plain names too)."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")
    return {k: os.environ[k] for k in keep if k in os.environ}


# ---------------------------------------------------------------------------------------------------- Label Studio


@dataclass
class LabelStudioServer:
    """A Label Studio server on 127.0.0.1 with sqlite in `data_dir` and local files served from `files_root`."""

    data_dir: Path
    files_root: Path
    port: int | None = None
    email: str = ADMIN_EMAIL
    password: str = ADMIN_PASSWORD
    binary: Path = field(default_factory=label_studio_bin)
    extra_env: dict[str, str] = field(default_factory=dict)
    bind_host: str = "127.0.0.1"
    create_token: bool = True  # create a PAT once up (LS allows only one per user: a reused data dir may have one)
    public_host: str | None = None  # LABEL_STUDIO_HOST; None: task URLs stay relative (/data/local-files/?d=...)
    proc: subprocess.Popen | None = None
    pat: str | None = None
    start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(self.data_dir) / "label-studio.log"

    def env(self) -> dict[str, str]:
        home = Path(self.data_dir) / "home"  # LS and its libraries may write caches under $HOME
        home.mkdir(parents=True, exist_ok=True)
        env = _base_env()
        env.update({
            "HOME": str(home),
            "PYTHONUNBUFFERED": "1",
            "LABEL_STUDIO_BASE_DATA_DIR": str(Path(self.data_dir).resolve()),
            "LABEL_STUDIO_USERNAME": self.email,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(Path(self.files_root).resolve()),
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",  # the backend is on 127.0.0.1 (connect + predict)
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",  # the auto-created webhook goes to 127.0.0.1 too
            # LS reports errors to sentry.io by default (and retries while offline): an empty DSN turns that off
            "LABEL_STUDIO_SENTRY_DSN": "",
            "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
        })
        if self.public_host:
            # HOST makes task URLs absolute (http://host/data/local-files/?d=...) and is /setup's `hostname`
            env["LABEL_STUDIO_HOST"] = self.public_host
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 90.0) -> "LabelStudioServer":
        binary = Path(self.binary)
        if not binary.exists():
            raise StartError(f"Label Studio not found at {binary}: create it with "
                             f"`python3 -m venv .venv-ls && .venv-ls/bin/pip install label-studio==1.23.2` "
                             f"or point $NTT_LABEL_STUDIO_BIN at the `label-studio` executable")
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        Path(self.files_root).mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_ls_port()
        elif port_in_use(self.port) or port_in_use(self.port, "localhost"):
            raise StartError(f"port {self.port} is busy (Label Studio would silently move to another port)")
        cmd = [str(binary), "start", "--no-browser", "--data-dir", str(Path(self.data_dir).resolve()),
               "--internal-host", self.bind_host, "--port", str(self.port)]
        t0 = time.monotonic()
        log = open(self.log_path, "ab")
        try:
            # the entry point is the Python server itself (no wrapper shell): its PID is the server's PID
            self.proc = subprocess.Popen(cmd, cwd=str(self.data_dir), env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        try:
            wait_until(self._healthy, timeout, interval=0.5, what=f"Label Studio /health on {self.url}",
                       proc=self.proc, log=self.log_path)
            self._check_port()
            self.start_seconds = time.monotonic() - t0
            if self.create_token:
                self.pat = self.create_pat()
        except BaseException:
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        r = requests.get(f"{self.url}/health", timeout=2)
        return r.status_code == 200 and r.json().get("status") == "UP"

    def _check_port(self) -> None:
        """Fail loudly if LS moved to another port (someone grabbed ours in the meantime)."""
        text = tail(self.log_path, 400)
        if f"Port {self.port} is in use" in text:
            raise StartError(f"Label Studio moved away from port {self.port}; another server answers there\n{text}")

    def create_pat(self) -> str:
        """Log in through the form and create a personal access token (a JWT refresh token)."""
        return create_personal_access_token(self.url, self.email, self.password)

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.proc, timeout)

    def __enter__(self) -> "LabelStudioServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


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

        def enough() -> list[dict] | None:
            tasks = self.list_tasks(project)
            return tasks if len(tasks) >= expected else None

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


# ---------------------------------------------------------------------------------------------------- the backend


@dataclass
class BackendServer:
    """This project's ML backend (`python -m labelstudio_backend`) as a separate process on 127.0.0.1."""

    model_dir: Path
    env_overrides: dict[str, str | None] = field(default_factory=dict)
    port: int | None = None
    host: str = "127.0.0.1"
    gunicorn_workers: int | None = None  # None: the development server; N: gunicorn with N worker processes
    python: Path = field(default_factory=lambda: Path(os.environ.get("NTT_BACKEND_PYTHON") or DEFAULT_PYTHON))
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # 127.0.0.1 reaches a server bound to 0.0.0.0 too

    def env(self) -> dict[str, str]:
        env = _base_env()
        for key in ("HOME", "NTT_CACHE_DIR", "TORCH_HOME", "OMP_NUM_THREADS"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), "MODEL_DIR": str(self.model_dir),
                    "NTT_PRESET": "synthetic", "LOG_LEVEL": "INFO"})
        for key, value in self.env_overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def start(self, timeout: float = 90.0) -> "BackendServer":
        Path(self.model_dir).mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        if self.log_path is None:
            self.log_path = Path(self.model_dir).parent / f"backend-{self.port}.log"
        if self.gunicorn_workers:
            # what the Docker image runs: gunicorn_conf reads HOST, PORT, WORKERS, THREADS
            self.env_overrides = {**self.env_overrides, "HOST": self.host, "PORT": str(self.port),
                                  "WORKERS": str(self.gunicorn_workers)}
            cmd = [str(self.python), "-m", "gunicorn", "-c", "python:labelstudio_backend.gunicorn_conf",
                   "labelstudio_backend.wsgi:app"]
        else:
            cmd = [str(self.python), "-m", "labelstudio_backend", "--host", self.host, "--port", str(self.port)]
        t0 = time.monotonic()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, cwd=str(REPO), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        try:
            wait_until(self._healthy, timeout, interval=0.3, what=f"backend /health on {self.url}", proc=self.proc,
                       log=self.log_path)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _healthy(self) -> bool:
        r = requests.get(f"{self.url}/health", timeout=2, auth=self.auth)
        return r.status_code == 200 and isinstance(r.json(), dict)

    @property
    def auth(self) -> tuple[str, str] | None:
        env = self.env()
        user, pw = env.get("BASIC_AUTH_USER"), env.get("BASIC_AUTH_PASS")
        return (user, pw) if user and pw else None

    def get(self, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 10)
        kw.setdefault("auth", self.auth)
        return requests.get(f"{self.url}{path}", **kw)

    def log(self, lines: int = 80) -> str:
        return tail(self.log_path, lines) if self.log_path else ""

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.proc, timeout)

    def __enter__(self) -> "BackendServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


if __name__ == "__main__":  # manual check: start LS, print URL + PAT, wait for Ctrl-C
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="ls-"))
    server = LabelStudioServer(root / "ls", root / "files").start()
    print(f"{server.url} up in {server.start_seconds:.1f} s; PAT {server.pat[:20]}...", file=sys.stderr)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
