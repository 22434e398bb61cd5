"""URL parsing that never raises anything but MalformedUrl: `urlsplit`, `.port` and `urljoin` raise a bare ValueError
for "http://[::1", a port above 65535 or "http://x:abc/", and one such task URL must never fail a whole batch."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class MalformedUrl(ValueError):
    """The URL cannot be parsed; the message names it and says why."""


@dataclass(frozen=True)
class UrlParts:
    scheme: str
    netloc: str
    hostname: str | None
    port: int | None  # the explicit port, else the scheme's default (None for schemes without one)
    path: str
    query: str


def split_url(url: str) -> UrlParts:
    try:
        parts = urlsplit(url)
        hostname, explicit = parts.hostname, parts.port
    except ValueError as exc:
        raise MalformedUrl(f"malformed URL {shorten(repr(url))}: {exc}") from None
    return UrlParts(parts.scheme, parts.netloc, hostname, explicit or DEFAULT_PORTS.get(parts.scheme), parts.path,
                    parts.query)


def join_url(base: str, location: str) -> str:
    """A redirect's Location resolved against the URL that answered it."""
    try:
        joined = urljoin(base, location)
    except ValueError as exc:
        raise MalformedUrl(f"malformed redirect location {shorten(repr(location))}: {exc}") from None
    split_url(joined)  # a Location with a bad port parses here, not later
    return joined


def shorten(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters for an error message (URLs can be megabytes long)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."
