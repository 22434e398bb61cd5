"""When gunicorn_worker.RequestSpool hands a request to a thread: only whole (or hopeless) requests, however framed."""
from __future__ import annotations

from labelstudio_backend.gunicorn_worker import RequestSpool, SpooledSocket

HEAD = b"POST /webhook HTTP/1.1\r\nHost: x\r\n"


def _feed(parts: list[bytes], handover: int = 10_000) -> list[bool]:
    spool = RequestSpool(handover)
    return [spool.feed(part) for part in parts]


def test_a_declared_body_is_handed_over_once_it_is_all_there():
    assert _feed([HEAD + b"Content-Length: 10\r\n\r\n", b"12345", b"67890"]) == [False, False, True]
    assert _feed([HEAD[:10], HEAD[10:] + b"Content-Length: 0\r\n\r\n"]) == [False, True]
    assert _feed([b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"]) == [True]


def test_a_chunked_body_is_handed_over_at_its_last_chunk():
    head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert _feed([head, b"5\r\nhello\r\n", b"0\r\n", b"\r\n"]) == [False, False, False, True]


def test_what_is_too_large_or_malformed_is_not_waited_for():
    # declared over the bound: its route refuses it on the declaration, without reading it
    assert _feed([HEAD + b"Content-Length: 20000\r\n\r\n"]) == [True]
    # chunked past the bound: handed over once the bound is buffered, the route reads its bound and refuses
    head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert _feed([head, b"2000\r\n" + b"x" * 8192, b"x" * 4000], handover=10_000) == [False, False, True]
    # garbage: gunicorn's parser answers it as it always does
    assert _feed([b"\x16\x03\x01 not http\r\n\r\n"]) == [True]


def test_the_spool_is_read_back_before_the_socket():
    class Socket:
        def recv(self, size):
            return b"from the socket"

    spool = RequestSpool(10_000)
    spool.feed(HEAD + b"Content-Length: 3\r\n\r\nabc" + b"GET /next")  # a pipelined request's start
    wrapped = SpooledSocket(Socket())
    wrapped.load(spool)
    assert wrapped.recv(len(HEAD)) == HEAD
    assert wrapped.has_pending()
    rest = wrapped.recv(1000)
    assert rest.endswith(b"abcGET /next") and not wrapped.has_pending()
    assert wrapped.recv(1000) == b"from the socket"
