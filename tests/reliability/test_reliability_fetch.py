"""Figure 6: fetching task images safely, through /predict of a backend process (each task's image URL is what an
attacker who can edit task data controls). Local paths stay inside LOCAL_FILES_DOCUMENT_ROOT; URLs are fetched only
from Label Studio's host and NTT_ALLOWED_HOSTS, never from link-local (cloud metadata) or, unless allowed, private
addresses; redirects are re-checked; every download has a size and a total time limit.

Nothing leaves 127.0.0.1: refused addresses (169.254.169.254, 10.0.0.1, ...) are refused before any connection, and
the hostile servers are local; their request counters prove which URLs were never fetched."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from support.backend_helpers import LABEL_CONFIG, PROJECT, annotation_result, created_webhook
from support.local_servers import (FakeLabelStudio, LocalServer, endless, huge_length, image, redirect, slow,
                           trickle_body, trickle_headers)
from support.reliability import LogTail, call, gauge, metrics, setup_body, start_backend, wait_idle

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

TIMEOUT_S = 3.0
MAX_BYTES = 2_000_000


@dataclass
class Fetch:
    what: str
    url: str
    allowed: bool  # True: the image must be read; False: refused (empty prediction, an image error, a log line)
    log: str = ""  # refused: a fragment of the reason in the backend log
    never_hit: tuple = ()  # (server, path) pairs that must get no request
    max_s: float | None = None  # the whole /predict must answer within this


def test_image_fetching_is_confined_and_bounded(tmp_path, rel_dataset, figure):
    ds = rel_dataset
    png = (ds.root / "images" / "000001.png").read_bytes()
    outside = ds.root.parent / "secret.png"  # a real image just outside the document root
    outside.write_bytes(png)
    links = ds.root / "links"
    links.mkdir(exist_ok=True)
    if not (links / "escape.png").is_symlink():
        os.symlink(outside, links / "escape.png")
        os.symlink(ds.root.parent, links / "up")  # a symlinked directory leading out

    ls = FakeLabelStudio().start()
    hostile, other = LocalServer().start(), LocalServer().start()
    for server in (ls, hostile, other):
        server.routes.update({"/ok.png": image(png), "/data/upload/ok.png": image(png),
                              "/data/upload/ok2.png": image(png)})
    meta = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    ls.routes.update({
        "/data/upload/to-loopback.png": redirect(f"{hostile.url}/ok.png"),
        "/data/upload/to-localhost.png": redirect(f"http://localhost:{hostile.port}/ok.png"),
        "/data/upload/to-metadata.png": redirect(meta),
        "/data/upload/loop.png": redirect("/data/upload/loop.png"),
        "/data/upload/slow.png": slow(10, png),
        "/data/upload/endless.png": endless(),
        "/data/upload/huge-length.png": huge_length(),
        "/data/upload/trickle-body.png": trickle_body(),
        "/data/upload/trickle-headers.png": trickle_headers(),
        "/tasks/9/presign/": redirect(meta),
    })
    hostile.routes.update({
        "/to-other-ip.png": redirect(f"{other.url}/ok.png"),
        "/to-metadata.png": redirect(meta),
        "/to-other-allowed.png": redirect(f"http://localhost:{other.port}/ok.png"),
        "/slow.png": slow(10, png), "/endless.png": endless(), "/trickle-body.png": trickle_body(),
    })
    limits = {"NTT_DOWNLOAD_TIMEOUT": str(TIMEOUT_S), "NTT_DOWNLOAD_MAX_BYTES": str(MAX_BYTES),
              "LOCAL_FILES_DOCUMENT_ROOT": str(ds.root), "LABEL_STUDIO_URL": ls.url}
    # strict: the usual production setting (private networks refused); literal IPs in the allow-list so that the
    # address check, not the host check, is what refuses them
    strict = start_backend(tmp_path, "fetch-strict", tmp_path / "models-strict", {
        **limits, "NTT_ALLOWED_HOSTS": "localhost,169.254.169.254,fe80::1,::ffff:169.254.169.254,10.0.0.1,"
                                       "192.168.1.10,172.16.0.5,100.64.0.1,0.0.0.0,::1"})
    # relaxed: an allowed host on a private network (NTT_ALLOW_PRIVATE_NETWORKS=true), e.g. an intranet image server;
    # the metadata address is even allow-listed by name, and must still be refused (link-local stays refused)
    relaxed = start_backend(tmp_path, "fetch-private", tmp_path / "models-private", {
        **limits, "NTT_ALLOWED_HOSTS": "localhost,169.254.169.254", "NTT_ALLOW_PRIVATE_NETWORKS": "true"})
    try:
        secret = str(outside)
        d = "/data/local-files/?d="
        strict_cases = [
            # ---- local files
            Fetch("local file inside the root", d + "images/000002.png", True),
            Fetch("local: ../", d + "../secret.png", False, "'..' is not allowed"),
            Fetch("local: images/../../", d + "images/../../secret.png", False, "'..' is not allowed"),
            Fetch("local: %2e%2e/ (URL-encoded)", d + "%2e%2e/secret.png", False, "'..' is not allowed"),
            Fetch("local: %252e%252e/ (double-encoded)", d + "%252e%252e/secret.png", False, "'..' is not allowed"),
            Fetch("local: %252e%252e%252f (double-encoded slash)", d + "%252e%252e%252fsecret.png", False,
                  "'..' is not allowed"),
            Fetch("local: absolute /etc/passwd", d + "/etc/passwd", False, "absolute paths"),
            Fetch("local: %2Fetc%2Fpasswd", d + "%2Fetc%2Fpasswd", False, "absolute paths"),
            Fetch("local: absolute path of a real image", d + secret, False, "absolute paths"),
            Fetch("local: symlink to a file outside", d + "links/escape.png", False, "leads outside"),
            Fetch("local: symlinked directory leading out", d + "links/up/secret.png", False, "leads outside"),
            Fetch("local: backslashes", d + "images\\..\\..\\secret.png", False, "invalid characters"),
            Fetch("local: NUL byte", d + "images/000001.png%00.txt", False, "invalid characters"),
            Fetch("local: traversal on a foreign host's local-files URL",
                  "http://evil.example" + d + "../secret.png", False, "'..' is not allowed"),
            # ---- addresses and hosts
            Fetch("cloud metadata 169.254.169.254", meta, False, "link-local"),
            Fetch("IPv6 link-local [fe80::1]", "http://[fe80::1]/x.png", False, "link-local"),
            Fetch("IPv4-mapped metadata [::ffff:169.254.169.254]", "http://[::ffff:169.254.169.254]/x.png", False,
                  "link-local"),
            Fetch("private 10.0.0.1", "http://10.0.0.1/x.png", False, "private"),
            Fetch("private 192.168.1.10", "http://192.168.1.10/x.png", False, "private"),
            Fetch("private 172.16.0.5", "http://172.16.0.5/x.png", False, "private"),
            Fetch("carrier-grade NAT 100.64.0.1", "http://100.64.0.1/x.png", False, "private"),
            Fetch("unspecified 0.0.0.0", f"http://0.0.0.0:{hostile.port}/ok.png", False, "not a unicast",
                  never_hit=((hostile, "/ok.png"),)),
            Fetch("loopback [::1]", f"http://[::1]:{hostile.port}/ok.png", False, "private",
                  never_hit=((hostile, "/ok.png"),)),
            Fetch("allowed name resolving to loopback (localhost)", f"http://localhost:{hostile.port}/ok.png", False,
                  "private", never_hit=((hostile, "/ok.png"),)),
            Fetch("host not in NTT_ALLOWED_HOSTS (127.0.0.1)", f"{hostile.url}/ok.png", False,
                  "neither Label Studio nor in NTT_ALLOWED_HOSTS", never_hit=((hostile, "/ok.png"),)),
            Fetch("host not in NTT_ALLOWED_HOSTS (a public name)", "https://images.evil.example/x.png", False,
                  "neither Label Studio nor in NTT_ALLOWED_HOSTS"),
            Fetch("scheme ftp://", "ftp://example.com/x.png", False, "unsupported image URL scheme"),
            # ---- Label Studio's host, and redirects from it (re-checked)
            Fetch("Label Studio's host (127.0.0.1, allowed: configured by the admin)", "/data/upload/ok.png", True),
            Fetch("LS media path on a foreign host: read from LABEL_STUDIO_URL instead",
                  "http://169.254.169.254/data/upload/ok2.png", True),
            Fetch("LS redirect to a loopback address", "/data/upload/to-loopback.png", False, "private",
                  never_hit=((hostile, "/ok.png"),)),
            Fetch("LS redirect to localhost", "/data/upload/to-localhost.png", False, "private",
                  never_hit=((hostile, "/ok.png"),)),
            Fetch("LS redirect to cloud metadata", "/data/upload/to-metadata.png", False, "link-local"),
            Fetch("cloud storage presign redirecting to metadata", "s3://bucket/x.png", False, "link-local"),
            Fetch("redirect loop", "/data/upload/loop.png", False, "redirects"),
            # ---- size and time limits (from Label Studio's host, which is allowed)
            Fetch("slow server (10 s before answering)", "/data/upload/slow.png", False, "timed out",
                  max_s=TIMEOUT_S + 3),
            Fetch("endless body", "/data/upload/endless.png", False, "NTT_DOWNLOAD_MAX_BYTES", max_s=TIMEOUT_S + 3),
            Fetch("declared 10 GB body", "/data/upload/huge-length.png", False, "above NTT_DOWNLOAD_MAX_BYTES",
                  max_s=2),
            Fetch("body trickled a byte at a time", "/data/upload/trickle-body.png", False, "timed out",
                  max_s=TIMEOUT_S + 3),
            Fetch("headers trickled a line at a time", "/data/upload/trickle-headers.png", False, "timed out",
                  max_s=TIMEOUT_S + 3),
        ]
        relaxed_cases = [
            Fetch("allowed host on a private network", f"http://localhost:{hostile.port}/ok.png", True),
            Fetch("same server by a name not allowed", f"{hostile.url}/ok.png?x=1", False,
                  "neither Label Studio nor in NTT_ALLOWED_HOSTS"),
            Fetch("allowed host redirecting to a host not allowed", f"http://localhost:{hostile.port}/to-other-ip.png",
                  False, "neither Label Studio nor in NTT_ALLOWED_HOSTS", never_hit=((other, "/ok.png"),)),
            Fetch("allowed host redirecting to cloud metadata", f"http://localhost:{hostile.port}/to-metadata.png",
                  False, "link-local"),
            Fetch("allowed host redirecting to another allowed one",
                  f"http://localhost:{hostile.port}/to-other-allowed.png", True),
            Fetch("allowed host, slow", f"http://localhost:{hostile.port}/slow.png", False, "timed out",
                  max_s=TIMEOUT_S + 3),
            Fetch("allowed host, endless body", f"http://localhost:{hostile.port}/endless.png", False,
                  "NTT_DOWNLOAD_MAX_BYTES", max_s=TIMEOUT_S + 3),
            Fetch("allowed host, trickled body", f"http://localhost:{hostile.port}/trickle-body.png", False,
                  "timed out", max_s=TIMEOUT_S + 3),
        ]
        results = []
        for backend, cases in ((strict, strict_cases), (relaxed, relaxed_cases)):
            _learn(backend, ds)
            for case in cases:
                results.append((case, *_check(backend, case)))
        failures = [f"{case.what} ({case.url}): {problem}" for case, problem, _ in results if problem]
        refused = [c for c, p, _ in results if not c.allowed and not p]
        allowed = [c for c, p, _ in results if c.allowed and not p]
        local = [c for c in refused if "local-files" in c.url]
        redirects = [c for c in refused if ("redirect" in c.what or "presign" in c.what) and "loop" not in c.what]
        timed = [(c, s) for c, p, s in results if c.max_s and not p]
        slowest = max((s for c, s in timed if "timed out" in c.log), default=0.0)
        figure("6 fetching images",
               f"{len(refused)}/{sum(not c.allowed for c, _, _ in results)} hostile image URLs refused with a logged "
               f"reason and an empty prediction: {len(local)} local paths (.., absolute, symlinked file and dir, "
               f"%2e%2e, double-encoded, backslash, NUL), link-local/metadata (incl. IPv6, IPv4-mapped, and when "
               f"allow-listed with private networks on), private, CGNAT, loopback, hosts not allowed, "
               f"{len(redirects)} redirects/presigns re-checked, a redirect loop; {len(timed)} size/time limits held "
               f"(slow server, trickled headers, trickled body cut at <= {slowest:.1f} s for a {TIMEOUT_S:g} s "
               f"limit; endless and declared-10 GB bodies cut at {MAX_BYTES / 1e6:g} MB); the hostile targets got 0 "
               f"requests; {len(allowed)}/{sum(c.allowed for c, _, _ in results)} legitimate fetches worked")
        assert not failures, "\n".join(failures)
    finally:
        strict.stop()
        relaxed.stop()
        for server in (ls, hostile, other):
            server.stop()


def _learn(backend, ds) -> None:
    """A reference in the memory, so that /predict reads its tasks' images (with an empty memory it need not)."""
    assert call(backend, "POST", "/setup", json=setup_body()).status_code == 200
    image_id = ds.positive_ids()[0]
    payload = created_webhook(ds, 1, image_id, annotation_result(ds, image_id))
    assert call(backend, "POST", "/webhook", json=payload).status_code == 200
    wait_idle(backend, lambda m: gauge(m).get("revision") == 1)


def _check(backend, case: Fetch) -> tuple[str | None, float]:
    """(what is wrong, or None; seconds the /predict took)."""
    tail = LogTail(backend.log_path)
    before = metrics(backend)["counters"].get("image_errors", 0)
    hits_before = [server.hit_count(path) for server, path in case.never_hit]
    body = {"tasks": [{"id": 9, "project": PROJECT, "data": {"image": case.url}}], "project": f"{PROJECT}.1",
            "label_config": LABEL_CONFIG, "params": {"context": None}}
    started = time.monotonic()
    response = call(backend, "POST", "/predict", json=body, timeout=60)
    elapsed = time.monotonic() - started
    if response.status_code != 200:
        return f"/predict answered {response.status_code}: {response.text[:200]}", elapsed
    errors = metrics(backend)["counters"].get("image_errors", 0) - before
    text = tail.read()
    if case.allowed:
        return (None if errors == 0 else f"not fetched: {text[-400:]}"), elapsed
    if errors != 1:
        return f"not refused (image_errors +{errors})", elapsed
    if response.json()["results"][0]["result"]:
        return "a refused image produced regions", elapsed
    if case.log and case.log not in text:
        return f"no log line with {case.log!r}: {text[-400:]}", elapsed
    for (server, path), hits in zip(case.never_hit, hits_before):
        if server.hit_count(path) != hits:
            return f"{server.url}{path} was requested", elapsed
    if case.max_s is not None and elapsed > case.max_s:
        return f"took {elapsed:.1f} s (limit {case.max_s:g} s)", elapsed
    return None, elapsed
