"""gunicorn's threaded worker, with every HTTP/1 request read whole before a thread is given to it.

gunicorn's `gthread` worker hands a connection to a thread as soon as its first byte arrives; the thread then reads the
rest with blocking reads. A client that sends its headers and part of a body, then stalls, holds that thread until it
gives up: ten of them were enough to keep `/health` from answering for as long as they stalled. Here the worker's
event loop reads each request (headers and body, Content-Length or chunked) with non-blocking reads, spooled to a
temporary file past 256 KiB, and only a complete request reaches a thread, which then parses it from the spool without
ever waiting on the client. A request still incomplete after NTT_REQUEST_READ_TIMEOUT_S is answered 408 and closed.

h11 (a well-kept HTTP/1.1 state machine) only says when the request is complete; gunicorn still parses it, so its
limits and errors are unchanged. A body declared or sent beyond the largest route bound (hooks.max_body_bytes) is handed
over once that much is buffered: the route refuses it (413) without reading further. TLS connections are served by the
plain gthread path (terminate TLS in a proxy).

    gunicorn -c python:labelstudio_backend.gunicorn_conf labelstudio_backend.wsgi:app   # worker_class points here
"""
from __future__ import annotations

import errno
import selectors
import tempfile
import time
from functools import partial
from typing import Any

import h11
from gunicorn.http import get_parser
from gunicorn.workers.gthread import ThreadWorker, TConn

from labelstudio_backend.settings import Settings
from labelstudio_backend.web.hooks import max_body_bytes

SPOOL_IN_MEMORY_BYTES = 256 * 1024  # past this a request's bytes go to a temporary file
RECV_BYTES = 256 * 1024
REQUEST_TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class RequestSpool:
    """One request's raw bytes as they arrive, and whether they make a whole request yet (h11 decides)."""

    def __init__(self, handover_bytes: int) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
        self.size = 0
        self.handover_bytes = handover_bytes  # a request this large is handed over whole or not (its route refuses it)
        self._http = h11.Connection(h11.SERVER)
        self._complete = False
        self.continue_sent = False

    def feed(self, data: bytes) -> bool:
        """Keep `data`; True once the thread can have the request (complete, too large to wait for, or malformed:
        gunicorn's parser then answers as it always does)."""
        self.file.write(data)
        self.size += len(data)
        if self._complete:
            return True
        self._http.receive_data(data)
        try:
            while True:
                event = self._http.next_event()
                if event is h11.NEED_DATA:
                    break
                if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)) or event is h11.PAUSED:
                    self._complete = True
                    break
                if isinstance(event, h11.Request) and _declared_length(event) > self.handover_bytes:
                    self._complete = True  # refused on its declared length, nothing more to wait for
                    break
        except h11.RemoteProtocolError:
            self._complete = True
        self._complete = self._complete or self.size > self.handover_bytes
        return self._complete

    def expects_continue(self) -> bool:
        """The client waits for `100 Continue` before sending its body (curl does for bodies over 1 KiB)."""
        return self._http.they_are_waiting_for_100_continue

    def rewind(self) -> None:
        self.file.seek(0)


def _declared_length(request: h11.Request) -> int:
    for name, value in request.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class SpooledSocket:
    """The client socket as gunicorn's parser sees it: recv() serves the spooled request first, then the socket.
    Everything else (send, sendall, fileno, timeouts) is the socket's own."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._spool: RequestSpool | None = None

    def load(self, spool: RequestSpool) -> None:
        if self._spool is not None:
            self._spool.file.close()
        spool.rewind()
        self._spool = spool

    def has_pending(self) -> bool:
        """Bytes of a next (pipelined) request still in the spool: the socket will not look readable for them."""
        if self._spool is None:
            return False
        file = self._spool.file
        return file.tell() < self._spool.size

    def recv(self, size: int, *flags: int) -> bytes:
        if self._spool is not None:
            data = self._spool.file.read(size)
            if data:
                return data
            self._spool.file.close()
            self._spool = None
        return self._sock.recv(size, *flags)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.file.close()
            self._spool = None
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BufferedThreadWorker(ThreadWorker):
    """`gthread` whose threads only ever see whole requests (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = Settings.from_env()
        self.read_timeout_s = settings.request_read_timeout_s
        self.handover_bytes = max_body_bytes(settings) + 1
        self.reading: dict[TConn, tuple[RequestSpool, float]] = {}
        # the bytes all incomplete requests may hold at once (memory and disk); past it a request is handed over as it
        # is and its thread reads the rest itself, as plain gthread does
        self.spool_budget_bytes = max(256 * 1024 * 1024, 2 * self.handover_bytes)
        self.spooled_bytes = 0

    # ---------------------------------------------------------------------------------------------- entry points
    def accept(self, listener: Any) -> None:
        if self.cfg.is_ssl:
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        self._start_reading(conn)

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        """A kept-alive connection sends its next request: read it whole too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_reading(conn)

    # ---------------------------------------------------------------------------------------------- reading
    def _start_reading(self, conn: TConn) -> None:
        conn.sock.setblocking(False)
        self.reading[conn] = (RequestSpool(self.handover_bytes), time.monotonic() + self.read_timeout_s)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _on_request_bytes(self, conn: TConn, client: Any) -> None:
        spool, _ = self.reading[conn]
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was whole
            self._stop_reading(conn)
            spool.file.close()
            self._drop(conn)
            return
        complete = spool.feed(data)
        self.spooled_bytes += len(data)
        complete = complete or self.spooled_bytes > self.spool_budget_bytes
        if not complete and spool.expects_continue() and not spool.continue_sent:
            spool.continue_sent = True
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass
        if complete:
            self._stop_reading(conn)
            self._hand_over(conn, spool)

    def _stop_reading(self, conn: TConn) -> None:
        spool, _ = self.reading.pop(conn, (None, 0.0))
        if spool is not None:
            self.spooled_bytes -= spool.size
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _hand_over(self, conn: TConn, spool: RequestSpool) -> None:
        if conn.parser is None:  # first request on this connection: the parser reads through the spool
            wrapped = SpooledSocket(conn.sock)
            conn.parser = get_parser(self.cfg, wrapped, conn.client)
        conn.parser.unreader.sock.load(spool)
        conn.data_ready = True
        conn.sock.setblocking(True)
        self.enqueue_req(conn)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """A kept-alive connection whose next (pipelined) request is already spooled goes straight back to a thread:
        its socket will not become readable for bytes already read."""
        wrapped = getattr(getattr(conn.parser, "unreader", None), "sock", None)
        if (self.alive and isinstance(wrapped, SpooledSocket) and wrapped.has_pending() and not fs.cancelled()
                and fs.exception() is None and fs.result() is True):
            self.enqueue_req(conn)
            return
        super().finish_request(conn, fs)

    def _drop(self, conn: TConn) -> None:
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also answer 408 to, and close, connections whose request is not whole after the read timeout."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, (_, deadline) in self.reading.items() if deadline <= now]:
            spool, _ = self.reading[conn]
            self._stop_reading(conn)
            spool.file.close()
            if spool.size:
                try:
                    conn.sock.send(REQUEST_TIMEOUT_ANSWER)
                except OSError:
                    pass
            self.log.info("closed %s: its request was not whole after %g s (%d bytes)", conn.client,
                          self.read_timeout_s, spool.size)
            self._drop(conn)
