"""Small HTTP servers on 127.0.0.1 for the reliability tests: a fake Label Studio (the few API routes the backend
reads, plus /data/upload/ media) and hostile image hosts (slow, endless, trickling, redirecting).

Everything is bounded: each hostile behaviour stops by itself after a few seconds or a few hundred MB, handler threads
are daemons, and stop() shuts the server down. Nothing here listens anywhere but 127.0.0.1.
"""
from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

TOKEN = "0123456789abcdef0123456789abcdef01234567"  # a legacy token: the backend sends "Token <key>"
MAX_BEHAVIOUR_S = 12.0  # no hostile behaviour lasts longer than this
MAX_ENDLESS_BYTES = 256 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 with routes: path → handler(request) (request is the
    BaseHTTPRequestHandler). Records every request path it got in `hits`."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.hits: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                with outer._lock:
                    outer.hits.append(self.path)
                try:
                    outer.handle(self)
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
                    self.close_connection = True

            do_POST = do_GET  # noqa: N815

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"local-server-{self.port}", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def hit_count(self, prefix: str = "") -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.startswith(prefix))

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path
        route = self.routes.get(path)
        if route is None:
            send_json(request, 404, {"detail": "Not found."})
        else:
            route(request)


# ------------------------------------------------------------------------------------------------ responses
def send_bytes(request: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "image/png",
               headers: dict[str, str] | None = None) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        request.send_header(key, value)
    request.end_headers()
    request.wfile.write(body)


def send_json(request: BaseHTTPRequestHandler, status: int, body) -> None:
    send_bytes(request, status, json.dumps(body).encode(), "application/json")


def image(body: bytes) -> Callable:
    return lambda request: send_bytes(request, 200, body)


def slow(seconds: float, body: bytes = b"") -> Callable:
    """Sends nothing for `seconds` (bounded), then the body."""
    def handler(request):
        time.sleep(min(seconds, MAX_BEHAVIOUR_S))
        send_bytes(request, 200, body)
    return handler


def endless() -> Callable:
    """A chunked body that never ends (until the client hangs up or 256 MB went out)."""
    def handler(request):
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        chunk = b"\0" * 65536
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        sent = 0
        deadline = time.monotonic() + MAX_BEHAVIOUR_S
        while sent < MAX_ENDLESS_BYTES and time.monotonic() < deadline:
            request.wfile.write(frame)
            sent += len(chunk)
        request.close_connection = True
    return handler


def huge_length() -> Callable:
    """Declares a 10 GB body (sends a little of it)."""
    def handler(request):
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        request.send_header("Content-Length", str(10 * 1024 ** 3))
        request.end_headers()
        request.wfile.write(b"\0" * 1024)
        request.close_connection = True
    return handler


def trickle_body(interval: float = 0.2) -> Callable:
    """Headers at once, then one byte every `interval` s: each read is quick, the whole never ends."""
    def handler(request):
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        request.send_header("Content-Length", "1000000")
        request.end_headers()
        deadline = time.monotonic() + MAX_BEHAVIOUR_S
        while time.monotonic() < deadline:
            request.wfile.write(b"\x89")
            request.wfile.flush()
            time.sleep(interval)
        request.close_connection = True
    return handler


def trickle_headers(interval: float = 0.2) -> Callable:
    """A status line, then one header line every `interval` s: the response never starts."""
    def handler(request):
        request.wfile.write(b"HTTP/1.1 200 OK\r\n")
        deadline = time.monotonic() + MAX_BEHAVIOUR_S
        n = 0
        while time.monotonic() < deadline:
            request.wfile.write(f"X-Slow-{n}: 1\r\n".encode())
            request.wfile.flush()
            n += 1
            time.sleep(interval)
        request.close_connection = True
    return handler


def redirect(location: str, status: int = 302) -> Callable:
    def handler(request):
        request.send_response(status)
        request.send_header("Location", location)
        request.send_header("Content-Length", "0")
        request.end_headers()
    return handler


def status(code: int) -> Callable:
    return lambda request: send_json(request, code, {"detail": f"HTTP {code}"})


# ------------------------------------------------------------------------------------------------ fake Label Studio
class FakeLabelStudio(LocalServer):
    """The Label Studio API calls ntt-label makes (labelstudio/client.py), answered from dicts; `/data/upload/<name>` serves
    `files` or a route. Requires `Authorization: Token <TOKEN>` on /api/ (and counts refusals)."""

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        self.projects: dict[int, dict] = {}
        self.tasks: dict[int, dict] = {}
        self.annotations: dict[int, dict] = {}
        self.unauthorized = 0
        self.fail_api = False  # answer every /api/ call 500 (Label Studio down)
        self._clock = itertools.count(1)
        self._data = threading.Lock()

    # ----- building the fake project (thread-safe) -----
    def add_project(self, project: int, label_config: str) -> None:
        with self._data:
            self.projects[project] = {"id": project, "title": f"project {project}", "label_config": label_config}

    def add_task(self, task_id: int, project: int, image_url: str) -> int:
        with self._data:
            self.tasks[task_id] = {"id": task_id, "project": project, "data": {"image": image_url}, "meta": {},
                                   "predictions": [], "total_annotations": 0, "cancelled_annotations": 0}
        return task_id

    def annotate(self, annotation_id: int, task_id: int, result: list, cancelled: bool = False) -> dict:
        with self._data:
            stamp = next(self._clock)
            annotation = {"id": annotation_id, "task": task_id, "project": self.tasks[task_id]["project"],
                          "result": copy.deepcopy(result), "was_cancelled": cancelled,
                          "created_at": "2026-11-25T14:00:00Z",
                          "updated_at": f"2026-11-25T{14 + stamp // 3600:02d}:{stamp // 60 % 60:02d}:"
                                        f"{stamp % 60:02d}.{stamp % 1000:03d}Z"}
            self.annotations[annotation_id] = annotation
            return copy.deepcopy(annotation)

    def delete_annotation(self, annotation_id: int) -> None:
        with self._data:
            self.annotations.pop(annotation_id, None)

    # ----- serving -----
    def handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        path, query = parts.path, parse_qs(parts.query)
        if path.startswith("/data/"):
            return super().handle(request)
        if not path.startswith("/api/"):
            return super().handle(request)
        if request.headers.get("Authorization") != f"Token {self.token}":
            with self._lock:
                self.unauthorized += 1
            return send_json(request, 401, {"detail": "Authentication credentials were not provided."})
        if self.fail_api:
            return send_json(request, 500, {"detail": "down"})
        segments = [s for s in path.split("/") if s]
        with self._data:
            body = self._api(segments, query)
        if body is None:
            return send_json(request, 404, {"detail": "Not found."})
        send_json(request, 200, body)

    def _api(self, segments: list[str], query: dict) -> object | None:
        # /api/projects/<id>/, /api/annotations/<id>/, /api/tasks/, /api/tasks/<id>/, /api/tasks/<id>/annotations/
        if len(segments) == 3 and segments[1] == "projects" and segments[2].isdigit():
            return copy.deepcopy(self.projects.get(int(segments[2])))
        if len(segments) == 3 and segments[1] == "annotations" and segments[2].isdigit():
            return copy.deepcopy(self.annotations.get(int(segments[2])))
        if len(segments) >= 3 and segments[1] == "tasks" and segments[2].isdigit():
            task = self.tasks.get(int(segments[2]))
            if task is None:
                return None
            if len(segments) == 4 and segments[3] == "annotations":
                return self._annotations_of(task["id"])
            return self._full(task)
        if segments == ["api", "tasks"]:
            project = int(query.get("project", ["0"])[0])
            tasks = [t for t in self.tasks.values() if t["project"] == project]
            wanted = _filtered_id(query)
            if wanted is not None:
                tasks = [t for t in tasks if t["id"] == wanted]
            page, size = int(query.get("page", ["1"])[0]), int(query.get("page_size", ["100"])[0])
            chunk = tasks[(page - 1) * size: page * size]
            if page > 1 and not chunk:
                return None  # Label Studio answers 404 past the last page
            return {"tasks": [self._full(t) for t in chunk], "total": len(tasks)}
        return None

    def _annotations_of(self, task_id: int) -> list[dict]:
        return [copy.deepcopy(a) for a in self.annotations.values() if a["task"] == task_id]

    def _full(self, task: dict) -> dict:
        annotations = self._annotations_of(task["id"])
        return {**copy.deepcopy(task), "annotations": annotations,
                "total_annotations": sum(1 for a in annotations if not a["was_cancelled"]),
                "cancelled_annotations": sum(1 for a in annotations if a["was_cancelled"])}


def _filtered_id(query: dict) -> int | None:
    raw = query.get("query", [None])[0]
    if not raw:
        return None
    try:
        items = json.loads(raw)["filters"]["items"]
        return int(next(i["value"] for i in items if i.get("filter") == "filter:tasks:id"))
    except (ValueError, KeyError, StopIteration, TypeError):
        return None
