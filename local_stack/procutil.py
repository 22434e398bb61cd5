"""Process and port helpers for running Label Studio and this backend locally (demo and tests)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable


REPO = Path(__file__).resolve().parents[1]
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


