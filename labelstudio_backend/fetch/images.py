"""Task image URL → RGB array, without becoming an SSRF or path-traversal gadget.

Where each kind of URL is read from:
- `/data/local-files/?d=rel/path`: from LOCAL_FILES_DOCUMENT_ROOT on disk when set (confined to it), else from
  Label Studio;
- `/data/upload/...` and any other Label-Studio-relative path: from LABEL_STUDIO_URL, with the API key; absolute
  URLs of those Label Studio media paths (task URLs carry Label Studio's HOST) are fetched from LABEL_STUDIO_URL too;
- `s3://`, `gs://`, `azure-blob://`: through Label Studio's `/tasks/<id>/presign/` redirect;
- `http(s)://`: the Label Studio host (with the API key), or a host in NTT_ALLOWED_HOSTS (without it);
- `data:image/...;base64,...`: decoded in place.
Every outbound hop other than Label Studio itself — redirects included — must resolve to public addresses only,
unless NTT_ALLOW_PRIVATE_NETWORKS is on (link-local, e.g. cloud metadata at 169.254.169.254, stays refused).
Sizes and total time are bounded: NTT_DOWNLOAD_MAX_BYTES per body, NTT_DOWNLOAD_TIMEOUT for a whole download with its
redirects. Socket timeouts alone bound each read, not the sum of reads, so a server that trickles its headers or body
a byte at a time would never time out; a watchdog shuts the download's sockets down at its deadline.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import posixpath
import socket
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs, unquote

import numpy as np
import requests

from labelstudio_backend.fetch.download_deadline import Deadline, pinned_address, watched_session
from labelstudio_backend.fetch.image_formats import check_image_format
from labelstudio_backend.fetch.url_parts import MalformedUrl, join_url, shorten, split_url
from labelstudio_backend.labelstudio.client import LabelStudioAPI, LabelStudioAPIError
from labelstudio_backend.settings import Settings
from ntt_engine import ImageLoadError, load_image

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
CLOUD_SCHEMES = ("s3:", "gs:", "azure-blob:")
LS_MEDIA_PATHS = ("/data/upload/", "/data/local-files", "/storage-data/")
Resolver = Callable[[str, int], Iterable[str]]


class ImageFetchError(RuntimeError):
    """The task's image cannot be read; the message names the URL and the reason."""


# ------------------------------------------------------------------------------------------------ policy (pure)
def address_refusal(address: str, allow_private: bool = False) -> str | None:
    """Why an outbound connection to `address` is refused, or None when it is allowed."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded:  # judged by the IPv4 addresses it reaches, refused if any of them is
            reasons = (address_refusal(str(v4), allow_private) for v4 in embedded)
            return next((f"{reason} (reached through {ip})" for reason in reasons if reason), None)
    if ip.is_link_local:
        return f"{ip} is link-local (cloud metadata endpoints live there)"
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not a unicast address"
    if ip.is_global:
        return None
    if allow_private and (ip.is_private or ip.is_loopback or ip in ipaddress.ip_network("100.64.0.0/10")):
        return None
    return f"{ip} is a private, loopback or reserved address (set NTT_ALLOW_PRIVATE_NETWORKS=true to allow)"


NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215, local-use: any RFC 6052 length up to /96
TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 6145's IPv4-translated addresses


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 form may reach: mapped (::ffff:a.b.c.d), translated (::ffff:0:a.b.c.d),
    IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d; in the local-use 64:ff9b:1::/48 wherever RFC 6052 puts it
    for a /48 or a /96 prefix) and 6to4 (2002:aabb:ccdd::). Each must be judged, not the IPv6 form."""
    value = int(ip)
    if ip.ipv4_mapped:
        return [ip.ipv4_mapped]
    if ip.sixtofour:
        return [ip.sixtofour]
    if ip in NAT64_PREFIX or ip in TRANSLATED or (value >> 32 == 0 and value > 1):  # not :: or ::1
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if ip in LOCAL_NAT64:  # /96: the last 32 bits; /48: bits 48-63 then 72-87 (bits 64-71 are the "u" octet)
        split = ((value >> 64) & 0xFFFF) << 16 | (value >> 40) & 0xFFFF
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF), ipaddress.IPv4Address(split)]
    return []


def check_addresses(addresses: Iterable[str], allow_private: bool = False) -> None:
    """Raise ImageFetchError unless every resolved address is allowed (one bad record is enough to refuse)."""
    addresses = list(addresses)
    if not addresses:
        raise ImageFetchError("the host resolves to no address")
    for address in addresses:
        reason = address_refusal(address, allow_private)
        if reason:
            raise ImageFetchError(f"refused: {reason}")


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Exact names, "*.example.com" (the domain and its subdomains) and "*" (any host)."""
    host = (host or "").lower().rstrip(".")
    for pattern in allowed_hosts:
        pattern = pattern.lower().rstrip(".")
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and (host == pattern[2:] or host.endswith(pattern[1:])):
            return True
    return False


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ImageFetchError(f"cannot resolve {host}: {exc}") from exc
    return sorted({info[4][0] for info in infos})


def local_file_path(root: Path, url: str) -> Path:
    """`/data/local-files/?d=rel/path` → a file inside `root`. Refuses absolute paths, `..`, encoded traversal
    and symlinks that lead out of the root."""
    values = parse_qs(split_url(url).query, keep_blank_values=True).get("d")
    relative = values[-1] if values else ""
    if not relative:
        raise ImageFetchError(f"local-files URL without a ?d= path: {url}")
    decoded_again = unquote(relative)
    for candidate in {relative, decoded_again}:
        if "\x00" in candidate or "\\" in candidate:
            raise ImageFetchError(f"refused local path {relative!r}: invalid characters")
        if candidate.startswith("/") or (len(candidate) > 1 and candidate[1] == ":"):
            raise ImageFetchError(f"refused local path {relative!r}: absolute paths are not allowed")
        if ".." in posixpath.normpath(candidate).split("/") or ".." in candidate.split("/"):
            raise ImageFetchError(f"refused local path {relative!r}: '..' is not allowed")
    try:  # a symlink loop is a RuntimeError, a name over NAME_MAX an OSError
        base = root.resolve()
        path = (base / relative).resolve()
    except (OSError, RuntimeError) as exc:
        raise ImageFetchError(f"refused local path {relative[:100]!r}: {exc}") from None
    if not path.is_relative_to(base):
        raise ImageFetchError(f"refused local path {relative!r}: it leads outside LOCAL_FILES_DOCUMENT_ROOT")
    return path


# ------------------------------------------------------------------------------------------------ loader
class ImageLoader:
    """Thread-safe; keeps a few recently downloaded images so interactive clicks on one task download it once."""

    def __init__(self, settings: Settings, api: LabelStudioAPI | None = None, resolver: Resolver = system_resolver,
                 session: requests.Session | None = None, cache_entries: int = 8, cache_ttl_s: float = 300.0):
        self.settings = settings
        self.api = api
        self.resolver = resolver
        self.session = session or watched_session()
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._cache_entries = cache_entries
        self._cache_ttl = cache_ttl_s
        self._lock = threading.Lock()

    def load(self, url: str, task_id: int | None = None, max_pixels: int = 40_000_000) -> np.ndarray:
        """RGB pixels; raises ImageFetchError only, whatever the URL or the file holds."""
        source = self.read(url, task_id)
        try:
            check_image_format(source)
            return load_image(source, max_pixels)
        except ImageLoadError as exc:
            raise ImageFetchError(f"{shorten(url)}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a file that changed under us, a decoder's own error: one task's
            raise ImageFetchError(f"{shorten(url)}: cannot read the image: {type(exc).__name__}: {exc}") from exc

    def read(self, url: str, task_id: int | None = None) -> bytes | Path:
        """The image's bytes, or its path for local files. Raises ImageFetchError only."""
        try:
            return self._read(url, task_id)
        except ImageFetchError:
            raise
        except MalformedUrl as exc:
            raise ImageFetchError(str(exc)) from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise ImageFetchError(f"{shorten(str(url))}: cannot read the image: {type(exc).__name__}: {exc}") from exc

    def _read(self, url: str, task_id: int | None) -> bytes | Path:
        if not isinstance(url, str) or not url.strip():
            raise ImageFetchError(f"the task has no image URL (got {url!r})")
        url = url.strip()
        if url.startswith("data:"):
            return self._data_uri(url)
        if url.startswith(("upload/", "/upload/")):
            url = "/data/" + url.lstrip("/")
        parts = split_url(url)
        is_local = parts.path.rstrip("/") == "/data/local-files" and "d=" in parts.query
        if is_local and self.settings.local_files_root:
            # any host: Label Studio's HOST (what task URLs carry) often differs from LABEL_STUDIO_URL, and the
            # ?d= path is confined to the root anyway
            path = local_file_path(self.settings.local_files_root, url)
            try:
                is_file = path.is_file()
            except OSError as exc:
                raise ImageFetchError(f"{shorten(url)}: cannot read {str(path)[:200]}: {exc.strerror or exc}") from None
            if not is_file:
                raise ImageFetchError(f"{shorten(url)}: no such file {path}")
            return path
        if parts.netloc and self.settings.label_studio_url and parts.path.startswith(LS_MEDIA_PATHS):
            # Label Studio media under its public HOST name: fetch it from LABEL_STUDIO_URL (only ever that host)
            url = parts.path + (f"?{parts.query}" if parts.query else "")
            parts = split_url(url)
        cached = self._cached(url)
        if cached is not None:
            return cached
        if url.startswith(CLOUD_SCHEMES):
            if task_id is None:
                raise ImageFetchError(f"{shorten(url)}: cloud storage URLs need the task id to presign")
            fileuri = base64.urlsafe_b64encode(url.encode()).decode()
            data = self._fetch(self._ls_url(f"/tasks/{int(task_id)}/presign/?fileuri={fileuri}"), url)
        elif url.startswith("/"):
            data = self._fetch_ls_path(url)
        elif parts.scheme in ("http", "https"):
            data = self._fetch(url, url)
        else:
            raise ImageFetchError(f"{shorten(url)}: unsupported image URL scheme {parts.scheme or '(none)'!r}")
        self._remember(url, data)
        return data

    # ----- helpers -----
    def _is_ls(self, url: str) -> bool:
        return bool(self.settings.label_studio_url) and _origin(url) == _origin(self.settings.label_studio_url)

    def _ls_url(self, path: str) -> str:
        if not self.settings.label_studio_url:
            raise ImageFetchError(f"{shorten(path)} is served by Label Studio: set LABEL_STUDIO_URL "
                                  "(and LABEL_STUDIO_API_KEY), or LOCAL_FILES_DOCUMENT_ROOT for local files")
        return self.settings.label_studio_url + path

    def _fetch_ls_path(self, path: str) -> bytes:
        try:
            return self._fetch(self._ls_url(path), path)
        except ImageFetchError as exc:
            # uploads on cloud-backed default storage are only served through the storage proxy
            if path.startswith("/data/upload/") and "HTTP 404" in str(exc):
                proxy = f"/storage-data/uploaded/?filepath={path[len('/data/'):]}"
                return self._fetch(self._ls_url(proxy), path)
            raise

    def _fetch(self, url: str, original: str) -> bytes:
        timed_out = f"{shorten(original)}: timed out after {self.settings.download_timeout:g} s (NTT_DOWNLOAD_TIMEOUT)"
        with Deadline(self.settings.download_timeout) as watchdog:
            try:
                data = self._fetch_hops(url, original)
            except (ImageFetchError, requests.RequestException) as exc:
                if watchdog.expired:
                    raise ImageFetchError(timed_out) from exc
                if isinstance(exc, ImageFetchError):
                    raise
                raise ImageFetchError(f"{shorten(original)}: download failed: {exc}") from exc
            if watchdog.expired:  # a body cut short by the watchdog may look complete
                raise ImageFetchError(timed_out)
            return data

    def _fetch_hops(self, url: str, original: str) -> bytes:
        deadline = time.monotonic() + self.settings.download_timeout
        limit = self.settings.download_max_bytes
        from_ls = False  # redirects chosen by Label Studio (presign) need no allow-list entry, only public IPs
        refreshed = pending_refresh = False
        hops = 0
        while hops <= MAX_REDIRECTS:
            is_ls = self._is_ls(url)
            address = self._check_target(url, is_ls, from_ls)
            headers = self._auth(is_ls, force_refresh=pending_refresh)
            pending_refresh = False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ImageFetchError(f"{shorten(original)}: timed out after {self.settings.download_timeout:.0f} s")
            try:
                with pinned_address(address):  # connect to the address just checked: no second DNS answer
                    response = self.session.get(url, headers=headers, stream=True, allow_redirects=False,
                                                timeout=(min(10.0, remaining), remaining))
            except requests.RequestException as exc:
                raise ImageFetchError(f"{shorten(original)}: download failed: {exc}") from exc
            with response:
                if response.is_redirect:
                    url = join_url(url, response.headers.get("location", ""))
                    from_ls = from_ls or is_ls
                    hops += 1
                    continue
                if response.status_code == 401 and is_ls and self.api is not None and not refreshed:
                    # the cached access token may have been revoked or expired early: refresh once and retry
                    refreshed = pending_refresh = True
                    continue
                if response.status_code != 200:
                    hint = " (is LABEL_STUDIO_API_KEY a valid personal access token?)" \
                        if response.status_code in (401, 403) and is_ls else ""
                    raise ImageFetchError(f"{shorten(original)}: HTTP {response.status_code}{hint}")
                return self._read_body(response, limit, deadline, original)
        raise ImageFetchError(f"{shorten(original)}: more than {MAX_REDIRECTS} redirects")

    def _check_target(self, url: str, is_ls: bool, from_ls: bool) -> tuple[str, int, str] | None:
        """(host, port, address) to connect to: the first resolved address, all of them checked; None for Label
        Studio itself."""
        parts = split_url(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageFetchError(f"{shorten(url)}: only http(s) URLs with a host can be fetched")
        if is_ls:
            return None  # the admin configured LABEL_STUDIO_URL: it may live on a private network
        if not from_ls and not host_allowed(parts.hostname, self.settings.allowed_hosts):
            raise ImageFetchError(f"{shorten(url)}: host {parts.hostname!r} is neither Label Studio nor in "
                                  "NTT_ALLOWED_HOSTS")
        port = parts.port
        try:
            addresses = list(self.resolver(parts.hostname, port))
            check_addresses(addresses, self.settings.allow_private_networks)
        except ImageFetchError as exc:
            raise ImageFetchError(f"{shorten(url)}: {exc}") from None
        return parts.hostname, port, addresses[0]

    def _auth(self, is_ls: bool, force_refresh: bool = False) -> dict[str, str]:
        if not is_ls or self.api is None:
            return {}
        try:
            return self.api.auth_headers(force_refresh=force_refresh)
        except LabelStudioAPIError as exc:
            raise ImageFetchError(str(exc)) from exc

    @staticmethod
    def _read_body(response: requests.Response, limit: int, deadline: float, original: str) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ImageFetchError(f"{shorten(original)}: {int(declared)} bytes is above NTT_DOWNLOAD_MAX_BYTES={limit}")
        chunks, size = [], 0
        for chunk in response.iter_content(chunk_size=1 << 16):
            size += len(chunk)
            if size > limit:
                raise ImageFetchError(f"{shorten(original)}: larger than NTT_DOWNLOAD_MAX_BYTES={limit}")
            if time.monotonic() > deadline:
                raise ImageFetchError(f"{shorten(original)}: download took longer than the time limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def _data_uri(self, url: str) -> bytes:
        header, _, payload = url.partition(",")
        if ";base64" not in header or not header[5:].startswith("image/"):
            raise ImageFetchError("only base64 image data: URIs are supported")
        if len(payload) * 3 // 4 > self.settings.download_max_bytes:
            raise ImageFetchError("data: URI is above NTT_DOWNLOAD_MAX_BYTES")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageFetchError(f"data: URI is not valid base64: {exc}") from exc

    def _cached(self, url: str) -> bytes | None:
        with self._lock:
            entry = self._cache.get(url)
            if entry is None or time.monotonic() - entry[0] > self._cache_ttl:
                self._cache.pop(url, None)
                return None
            self._cache.move_to_end(url)
            return entry[1]

    def _remember(self, url: str, data: bytes) -> None:
        with self._lock:
            self._cache[url] = (time.monotonic(), data)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = split_url(url)
    return parts.scheme, parts.hostname, parts.port
