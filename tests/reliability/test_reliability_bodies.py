"""Figure 9: request bodies through the real routes of a backend process (development server and gunicorn, payload
mode). A body over its route's bound is refused whole (413) however it is framed, a chunked one included (werkzeug
used to stop reading at the bound and hand the route a cut body); a 30 MiB JSON string costs about its size, not
~115 bytes of RAM per character; a body in UTF-16 is refused, not decoded past the nesting check; and memory.ntt is
byte-identical after each, with the process alive."""
from __future__ import annotations

import json

import pytest

from support.backend_helpers import PROJECT, annotation_result, created_webhook, task_for
from local_stack import wait_until
from support.reliability import (RssSampler, call, memory_bytes, rss_bytes, setup_body, start_backend, stored,
                                 wait_idle)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(400)]

MiB = 1024 * 1024
WEBHOOK_LIMIT = 1 * MiB


def _chunks(data: bytes, size: int = 64 * 1024):
    """A generator body: requests sends it with Transfer-Encoding: chunked and no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _cases(ds) -> list[tuple[str, str, str, dict, int]]:
    """(name, method, path, requests kwargs, expected status)."""
    image_id = ds.positive_ids()[0]
    over = json.dumps({"action": "ANNOTATION_CREATED", "junk": "x" * int(1.5 * WEBHOOK_LIMIT)}).encode()
    setup_over = json.dumps({**setup_body(), "junk": "x" * int(1.5 * MiB)}).encode()
    long_string = json.dumps({"tasks": [task_for(ds, image_id)], "project": PROJECT,
                              "junk": "x" * (30 * MiB)}).encode()
    nested = "[" * 65 + "]" * 65
    json_type = {"Content-Type": "application/json"}
    return [
        ("chunked /webhook 1.5x its bound", "POST", "/webhook", {"data": _chunks(over), "headers": json_type}, 413),
        ("chunked /setup 1.5x its bound", "POST", "/setup", {"data": _chunks(setup_over), "headers": json_type}, 413),
        ("declared /webhook 1.5x its bound", "POST", "/webhook", {"data": over, "headers": json_type}, 413),
        ("/predict with a 30 MiB string", "POST", "/predict", {"data": long_string, "headers": json_type}, 200),
        ("/webhook in UTF-16, nested 65 deep", "POST", "/webhook",
         {"data": json.dumps({"action": "ANNOTATION_CREATED", "x": json.loads(nested)}).encode("utf-16"),
          "headers": json_type}, 400),
        ("/setup in UTF-16", "POST", "/setup", {"data": json.dumps(setup_body()).encode("utf-16"),
                                                 "headers": json_type}, 400),
        ("a good webhook still applies", "POST", "/webhook",
         {"json": created_webhook(ds, 901, ds.positive_ids()[1], annotation_result(ds, ds.positive_ids()[1]))}, 200),
    ]


@pytest.mark.parametrize("workers", [None, 2], ids=["dev-server", "gunicorn"])
def test_bodies_are_refused_whole_and_cost_about_their_size(tmp_path, rel_dataset, figure, workers):
    ds = rel_dataset
    model_dir = tmp_path / "models"
    backend = start_backend(tmp_path, f"bodies-{workers}", model_dir, {
        "LOCAL_FILES_DOCUMENT_ROOT": str(ds.root), "NTT_WEBHOOK_MAX_BYTES": str(WEBHOOK_LIMIT),
        "NTT_REFRESH_TASKS": "0"}, workers=workers)
    outcomes, problems, peak_growth = [], [], 0
    try:
        assert call(backend, "POST", "/setup", json=setup_body()).status_code == 200
        first = ds.positive_ids()[0]
        assert call(backend, "POST", "/webhook",
                    json=created_webhook(ds, 900, first, annotation_result(ds, first))).status_code == 200
        # Under gunicorn /metrics answers for one worker, maybe not the one applying: wait for what is stored, or
        # the apply (the engine's first build takes seconds) lands during a later case and reads as its change.
        wait_until(lambda: (snap := stored(model_dir)) is not None and "annotation:900" in snap.memory, 120,
                   interval=0.1, what="annotation 900 in the stored memory", proc=backend.proc, log=backend.log_path)
        wait_idle(backend)
        for name, method, path, kwargs, expected in _cases(ds):
            before = memory_bytes(model_dir)
            base = sum(rss_bytes(pid) for pid in [backend.proc.pid])
            with RssSampler(backend.proc.pid) as rss:
                try:
                    status = call(backend, method, path, **kwargs).status_code
                except Exception as exc:  # noqa: BLE001 - a reset connection is an outcome to report
                    status = type(exc).__name__
            wait_idle(backend)
            growth = max(0, rss.peak_total - base) if workers is None else 0  # gunicorn: one worker of several
            peak_growth = max(peak_growth, growth)
            changed = memory_bytes(model_dir) != before and name != "a good webhook still applies"
            outcomes.append(f"{name}: {status}")
            if status != expected or changed:
                problems.append(f"{name}: {status} (expected {expected}){', memory changed' if changed else ''}")
            assert backend.proc.poll() is None, f"the backend died on {name}"
        if workers is None and peak_growth > 600 * MiB:
            problems.append(f"peak RSS grew by {peak_growth / MiB:.0f} MiB on one request")
    finally:
        backend.stop()
    figure(f"9 bodies ({'gunicorn x2' if workers else 'dev server'})",
           f"{len(outcomes) - len(problems)}/{len(outcomes)} cases as expected ({'; '.join(outcomes)})"
           + (f"; largest RSS growth on one request {peak_growth / MiB:.0f} MiB (the 30 MiB string body)"
              if workers is None else ""))
    assert not problems, problems
