"""Helpers of the reliability tests: backend processes, /metrics polling, stored state, logs, RSS, hostile images."""
from __future__ import annotations

import contextlib
import os
import signal
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import requests

from support.backend_helpers import LABEL_CONFIG, PROJECT, Dataset, region_for
from local_stack import BackendServer, wait_until
from labelstudio_backend.store.database import SqlProjectStore
from labelstudio_backend.store.legacy import AsStored
from labelstudio_backend.store.projects import ProjectSnapshot, ProjectState, ProjectStore
from labelstudio_backend.store.schema import DEFAULT_SQLITE_NAME, default_url
from ntt_engine import MemoryBank

__all__ = ["LABEL_CONFIG", "PROJECT", "start_backend", "kill9", "call", "metrics", "gauge", "wait_idle",
           "memory_file", "stored", "corrupt_reference_row", "memory_bytes", "load_memory", "load_state", "LogTail", "rss_bytes", "child_pids", "RssSampler",
           "png_bomb", "single_region", "api_webhook", "setup_body", "wait_until"]


# ------------------------------------------------------------------------------------------------ processes
def start_backend(tmp: Path, name: str, model_dir: Path, env: dict[str, str | None] | None = None,
                  workers: int | None = None, timeout: float = 120.0, module: str | None = None) -> BackendServer:
    """The backend as a separate process on 127.0.0.1 (dev server, or gunicorn with `workers` workers);
    NTT_PRESET=synthetic unless `env` says otherwise. Its log is tmp/<name>.log (appended across restarts)."""
    overrides: dict[str, str | None] = {
        "NTT_PRESET": "synthetic", "LOG_LEVEL": "INFO", "NTT_CACHE_DIR": str(tmp / "ntt-cache"),
        "HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1", "LABEL_STUDIO_URL": None, "LABEL_STUDIO_API_KEY": None,
        **(env or {})}
    server = BackendServer(model_dir=model_dir, env_overrides=overrides, log_path=tmp / f"{name}.log",
                           gunicorn_workers=workers, **({"module": module} if module else {}))
    return server.start(timeout=timeout)


def kill9(server: BackendServer) -> None:
    """SIGKILL the backend's whole process group (the one its Popen created), and reap it."""
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def call(server: BackendServer, method: str, path: str, auth: Any = "default", timeout: float = 60.0,
         **kw: Any) -> requests.Response:
    kw.setdefault("timeout", timeout)
    return requests.request(method, f"{server.url}{path}", auth=server.auth if auth == "default" else auth, **kw)


def metrics(server: BackendServer) -> dict:
    response = call(server, "GET", "/metrics", timeout=30)
    response.raise_for_status()
    return response.json()


def gauge(m: dict, project: int = PROJECT) -> dict:
    return next((p for p in m.get("projects", []) if p["project"] == project), {})


def _idle(m: dict) -> bool:
    counters = m["counters"]
    queued = sum(v for k, v in counters.items() if k.startswith("events_queued_"))
    done = counters.get("events_applied", 0) + counters.get("events_failed", 0)
    return m["queue_length"] == 0 and done >= queued


def wait_idle(server: BackendServer, condition: Callable[[dict], bool] = lambda m: True,
              timeout: float = 60.0, what: str = "the backend's event queue to drain") -> dict:
    """/metrics once every queued event was applied (one process: the dev server) and `condition` holds."""
    return wait_until(lambda: (lambda m: m if _idle(m) and condition(m) else None)(metrics(server)), timeout,
                      interval=0.05, what=what, proc=server.proc, log=server.log_path)


# ------------------------------------------------------------------------------------------------ stored state
def memory_file(model_dir: Path, project: int = PROJECT) -> Path:
    """Where NTT_STATE_URL=files keeps a project's memory."""
    return Path(model_dir) / str(project) / "memory.ntt"


def stored(model_dir: Path, project: int = PROJECT) -> ProjectSnapshot | None:
    """The project as stored in MODEL_DIR, read as another process would: from the state database (the default) or
    from the files of NTT_STATE_URL=files; None when nothing is stored."""
    model_dir = Path(model_dir)
    if (model_dir / str(project) / "state.json").exists() or memory_file(model_dir, project).exists():
        files = ProjectStore(model_dir, AsStored)
        return files.snapshot(project) if files.exists(project) else \
            ProjectSnapshot(ProjectState(project), MemoryBank.load(memory_file(model_dir, project)))
    if not (model_dir / DEFAULT_SQLITE_NAME).exists():
        return None
    database = SqlProjectStore(default_url(model_dir), model_dir, AsStored, lock_timeout=30)
    return database.snapshot(project) if database.exists(project) else None


def corrupt_reference_row(model_dir: Path, project: int, ref_id: str, **columns: Any) -> None:
    """Overwrite columns of a reference's row in MODEL_DIR's state database and stamp it as a new write (the
    project's next generation), so that running backends read it, as if another replica had written it."""
    from sqlalchemy import select, update

    from labelstudio_backend.store import schema

    database = SqlProjectStore(default_url(model_dir), model_dir, AsStored, lock_timeout=30)
    with database.db.begin() as conn:
        generation = conn.execute(select(schema.projects.c.generation)
                                  .where(schema.projects.c.project_id == project)).scalar_one() + 1
        conn.execute(update(schema.references).where(schema.references.c.project_id == project,
                                                     schema.references.c.ref_id == ref_id)
                     .values(generation=generation, **columns))
        conn.execute(update(schema.projects).where(schema.projects.c.project_id == project)
                     .values(generation=generation))


def memory_bytes(model_dir: Path, project: int = PROJECT) -> bytes | None:
    """The stored memory, serialised: equal bytes mean an equal memory (references, vectors, order, revision)."""
    snap = stored(model_dir, project)
    return snap.memory.to_bytes() if snap is not None else None


def load_memory(model_dir: Path, project: int = PROJECT) -> MemoryBank:
    snap = stored(model_dir, project)
    assert snap is not None, f"no memory stored for project {project} in {model_dir}"
    return snap.memory


def load_state(model_dir: Path, project: int = PROJECT) -> ProjectState:
    snap = stored(model_dir, project)
    assert snap is not None, f"no state stored for project {project} in {model_dir}"
    return snap.state


# ------------------------------------------------------------------------------------------------ logs and RSS
class LogTail:
    """The part of a log file written since the last read."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> str:
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        return data.decode(errors="replace")

    def wait_for(self, text: str, timeout: float, interval: float = 0.01) -> str | None:
        """The new text once it contains `text`, or None after `timeout` s."""
        seen = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen += self.read()
            if text in seen:
                return seen
            time.sleep(interval)
        return None


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return sorted(set(children))


class RssSampler:
    """Samples the RSS of a process and its children every `interval` s in a thread; peak per pid and of the sum."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak: dict[int, int] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in [self.pid] + child_pids(self.pid):
                rss = rss_bytes(pid)
                total += rss
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


# ------------------------------------------------------------------------------------------------ data
def png_bomb(width: int, height: int, bit_depth: int = 1) -> bytes:
    """A valid greyscale PNG of width x height, all zeros: a few hundred KB that would decode to width*height*3
    bytes of RGB. Built row by row, so the test never holds the pixels either."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (width * bit_depth + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    idat = bytearray()
    block = row * 256
    for start in range(0, height, 256):
        idat += compressor.compress(block if start + 256 <= height else row * (height - start))
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(idat)) + chunk(b"IEND", b"")


def single_region(dataset: Dataset, image_id: int, kind: str = "brush", which: int = 0) -> list[dict]:
    """The result of an annotation marking one object (the `which`-th) of an image: one memory entry."""
    instances = dataset.instances(image_id)
    label, mask = instances[which % len(instances)]
    return region_for(kind, label, mask)[:1]


def api_webhook(action: str, annotation_id: int, task_id: int | None = None, project: int = PROJECT) -> dict:
    """A webhook as Label Studio sends it, reduced to what an API-mode backend reads: ids only (it re-reads the
    annotation, its task and the project from the API)."""
    body: dict = {"action": action, "project": {"id": project}}
    if action == "ANNOTATIONS_DELETED":
        body["annotations"] = [{"id": annotation_id}]
    else:
        body["annotation"] = {"id": annotation_id, "task": task_id, "project": project}
        body["task"] = {"id": task_id, "project": project}
    return body


def setup_body(project: int = PROJECT, schema: str = LABEL_CONFIG, **extra: Any) -> dict:
    return {"project": f"{project}.1795614847", "schema": schema, "hostname": "http://127.0.0.1:8080",
            "access_token": "unused", "extra_params": None, **extra}


def strip_ids(results: list[dict]) -> list[dict]:
    """Predictions without the random region ids (uuid per response)."""
    out = []
    for prediction in results:
        regions = [{k: v for k, v in region.items() if k != "id"} for region in prediction.get("result", [])]
        out.append({**prediction, "result": regions})
    return out


def mask_pixels(dataset: Dataset, image_id: int) -> int:
    return int(sum(np.count_nonzero(m) for _, m in dataset.instances(image_id)))
