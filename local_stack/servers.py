"""A real Label Studio 1.23.2 server and this backend as separate processes on 127.0.0.1 (demo and tests).

Facts this relies on are in the team's LABEL_STUDIO.md §1: the headless env vars, the personal-access-token flow,
"LS silently moves to the next port when busy", and "kill the real server PID, not a wrapper shell".
Only the standard library and requests: nothing here imports Label Studio (it lives in its own venv, .venv-ls).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from .ls_client import create_personal_access_token
from .procutil import (ADMIN_EMAIL, ADMIN_PASSWORD, DEFAULT_PYTHON, REPO, StartError, _base_env, free_ls_port,
                       free_port, label_studio_bin, port_in_use, stop_process, tail, wait_until)


# ---------------------------------------------------------------------------------------------------- Label Studio


class _Stoppable:
    """A server process this module started: stopped on exit from a `with` block, or by stop()."""

    proc: subprocess.Popen | None

    def start(self, *args: Any, **kwargs: Any):  # overridden
        raise NotImplementedError

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.proc, timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass
class LabelStudioServer(_Stoppable):
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
            # the Data Manager's "Prediction score" averages predictions of the connected backend's current
            # model_version with this flag; without it, only those whose model_version is the backend's *title*
            # (none), so the column stays empty (data_manager/managers.py annotate_predictions_score)
            "ff_front_dev_1682_model_version_dropdown_070622_short": "true",
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


# ---------------------------------------------------------------------------------------------------- the backend


@dataclass
class BackendServer(_Stoppable):
    """This project's ML backend (`python -m labelstudio_backend`) as a separate process on 127.0.0.1."""

    model_dir: Path
    env_overrides: dict[str, str | None] = field(default_factory=dict)
    port: int | None = None
    host: str = "127.0.0.1"
    gunicorn_workers: int | None = None  # None: the development server; N: gunicorn with N worker processes
    module: str = "labelstudio_backend"  # what the development server runs with -m (tests may wrap it)
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
            cmd = [str(self.python), "-m", self.module, "--host", self.host, "--port", str(self.port)]
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
