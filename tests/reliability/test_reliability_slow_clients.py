"""Figure 14: slow clients against gunicorn (one worker, 4 threads). Clients that send their headers and part of a
body, a chunked body that stops, half a header block, or nothing, then stall, never hold one of the worker's threads
(`labelstudio_backend/gunicorn_worker.py` reads every request whole before a thread gets it): `/health` answers
within a second while 19 of them stall (with plain gthread 10 were enough to time it out). The stalled requests are
served as soon as they complete; `Expect: 100-continue` and pipelined requests work; a request still incomplete after
NTT_REQUEST_READ_TIMEOUT_S is answered 408 and closed."""
from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest
import requests

from support.reliability import LogTail, start_backend

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

READ_TIMEOUT_S = 6.0
HEALTH_BOUND_S = 1.0
HEAD = "POST /webhook HTTP/1.1\r\nHost: backend\r\nContent-Type: application/json\r\n"
BODY = json.dumps({"action": "PROJECT_UPDATED", "project": {"id": 1}, "pad": "x" * 900}).encode()


def _open(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def _status(sock: socket.socket) -> int:
    """The final status of the answer on `sock` (interim 1xx answers skipped)."""
    raw = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {raw[:80]!r}")
        raw += chunk
        while b"\r\n\r\n" in raw:
            head, _, raw = raw.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status >= 200:
                return status


def _health_times(url: str, n: int = 5) -> list[float]:
    times = []
    for _ in range(n):
        start = time.monotonic()
        try:
            assert requests.get(f"{url}/health", timeout=5).status_code == 200
            times.append(time.monotonic() - start)
        except requests.RequestException:
            times.append(float("inf"))
        time.sleep(0.1)
    return times


def test_stalled_clients_never_starve_the_threads(tmp_path, figure):
    backend = start_backend(tmp_path, "slow-clients", tmp_path / "models", {
        "THREADS": "4", "NTT_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S), "NTT_REFRESH_TASKS": "0"}, workers=1)
    port = int(backend.url.rsplit(":", 1)[1])
    log = LogTail(backend.log_path)
    stalled: dict[str, list[socket.socket]] = {}
    try:
        length = f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        stalled["partial body"] = [_open(port, HEAD.encode() + length + BODY[:11]) for _ in range(10)]
        chunked = HEAD.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(BODY):x}\r\n".encode() + BODY[:11]
        stalled["chunked, stopped"] = [_open(port, chunked) for _ in range(3)]
        stalled["half the headers"] = [_open(port, HEAD.encode()[:40]) for _ in range(3)]
        stalled["nothing sent"] = [_open(port, b"") for _ in range(3)]
        time.sleep(0.5)
        during = _health_times(backend.url)

        # the stalled requests complete: each is served
        for sock in stalled["partial body"]:
            sock.sendall(BODY[11:])
        for sock in stalled["chunked, stopped"]:
            sock.sendall(BODY[11:] + b"\r\n0\r\n\r\n")
        completed = [_status(s) for s in stalled["partial body"] + stalled["chunked, stopped"]]

        # a client waiting for 100 Continue before its body, and two pipelined requests on one connection
        waiting = _open(port, HEAD.encode() + b"Expect: 100-continue\r\n" + length)
        waiting.settimeout(3)
        interim = waiting.recv(64)
        waiting.sendall(BODY)
        expect_status = _status(waiting)
        health = b"GET /health HTTP/1.1\r\nHost: backend\r\n\r\n"
        pipelined = _open(port, health + health)
        pipelined_statuses = [_status(pipelined), _status(pipelined)]

        # what never completes is answered 408 and closed after the read timeout
        for sock in stalled["half the headers"]:
            sock.settimeout(READ_TIMEOUT_S + 5)
        start = time.monotonic()
        timed_out = [s.recv(200).split(b"\r\n", 1)[0] for s in stalled["half the headers"]]
        closed_after = time.monotonic() - start
        after = _health_times(backend.url, 2)
        alive = backend.proc.poll() is None
    finally:
        for sockets in stalled.values():
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        backend.stop()

    figure("14 slow clients (gunicorn, 1 worker x 4 threads)",
           f"19 stalled clients (10 partial bodies, 3 stopped chunked bodies, 3 half header blocks, 3 silent): "
           f"/health in {max(during) * 1000:.0f} ms at most (5 calls); the 13 stalled requests answered "
           f"{sorted(set(completed))} once complete; Expect: 100-continue got {interim.split(b' ')[1:2]} then "
           f"{expect_status}; pipelined {pipelined_statuses}; incomplete requests answered {set(timed_out)} after "
           f"<= {closed_after + 0.5:.1f} s of {READ_TIMEOUT_S:g} s")
    assert max(during) < HEALTH_BOUND_S, f"/health took {during} s while clients stalled"
    assert all(status == 200 for status in completed), completed
    assert interim.startswith(b"HTTP/1.1 100"), interim
    assert expect_status == 200
    assert pipelined_statuses == [200, 200]
    assert set(timed_out) == {b"HTTP/1.1 408 Request Timeout"}, timed_out
    assert closed_after < READ_TIMEOUT_S + 2
    assert log.wait_for("was not whole after", timeout=5)
    assert alive and max(after) < HEALTH_BOUND_S
