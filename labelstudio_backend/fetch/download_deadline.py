"""A total time limit for an HTTP download, redirects included.

Socket timeouts bound each read, not the sum of reads, so a server that trickles its headers or body a byte at a time
would never time out. `Deadline` shuts down every socket the download opened once its time is up, so a blocked read
returns at once; `watched_session()` is a requests session whose connections register their sockets with the
Deadline active in the current thread. `pinned_address()` makes those connections connect to an address the caller
has already checked instead of resolving the host again (a DNS-rebinding attacker answers the check with a public
address and the connection with a private one); the Host header and TLS (SNI, certificate) still use the host name.
"""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection

_watch = threading.local()  # the Deadline of the download running in this thread, if any


class Deadline:
    """Shuts down the sockets a download opened once its time is up, so that a blocked read returns at once."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "Deadline":
        _watch.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _watch.deadline = None

    def track(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _track(sock: socket.socket | None) -> None:
    deadline = getattr(_watch, "deadline", None)
    if deadline is not None:
        deadline.track(sock)


@contextmanager
def pinned_address(target: tuple[str, int, str] | None) -> Iterator[None]:
    """While active in this thread, a new connection to (host, port) connects to `address`: target = (host, port,
    address), or None for no pin."""
    previous = getattr(_watch, "pin", None)
    _watch.pin = target
    try:
        yield
    finally:
        _watch.pin = previous


def _normal(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


class _PinnedConnect:
    def _new_conn(self) -> socket.socket:
        pin = getattr(_watch, "pin", None)
        if pin is None or (_normal(pin[0]), pin[1]) != (_normal(self.host), self.port):
            return super()._new_conn()
        host = self._dns_host  # urllib3 resolves _dns_host; `host` (SNI, certificate, Host header) is restored after
        self._dns_host = pin[2]
        try:
            return super()._new_conn()
        finally:
            self._dns_host = host


class _WatchedHTTPConnection(_PinnedConnect, HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _track(self.sock)

    def request(self, *args, **kwargs):  # a kept-alive connection is reused without connect()
        _track(self.sock)
        return super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_PinnedConnect, HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _track(self.sock)

    def request(self, *args, **kwargs):
        _track(self.sock)
        return super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections register their sockets with the download's Deadline."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def watched_session() -> requests.Session:
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, WatchedAdapter())
    return session
