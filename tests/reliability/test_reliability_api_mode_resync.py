"""Figure 8, API mode (issue 12): with LABEL_STUDIO_API_KEY and basic auth, webhooks are unauthenticated
notifications. One bad task must not poison a resync, a forged event must not create project directories, and one
event naming thousands of ids must not become thousands of Label Studio reads. A real backend process against the
fake Label Studio API (tests/support/local_servers.py), which counts the reads."""
from __future__ import annotations

import pytest

from support.backend_helpers import LABEL_CONFIG, PROJECT
from support.local_servers import TOKEN, FakeLabelStudio
from support.reliability import LogTail, call, gauge, load_memory, metrics, setup_body, single_region, start_backend, wait_idle
from support.hostile_inputs import Case, run_cases

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

USER, PASSWORD = "ntt", "s3cret-pass"
BAD_URLS = ("http://[::1", "http://x:abc/x.png")  # malformed: urlsplit or .port raise ValueError
ANNOTATIONS = 40


def test_api_mode_resyncs_around_bad_tasks_and_bounds_reads(tmp_path, rel_dataset, figure):
    ds = rel_dataset
    ls = FakeLabelStudio().start()
    ls.add_project(PROJECT, LABEL_CONFIG)
    positives = ds.positive_ids()
    for n in range(ANNOTATIONS):
        image_id = positives[n % len(positives)]
        url = BAD_URLS[n - ANNOTATIONS + len(BAD_URLS)] if n >= ANNOTATIONS - len(BAD_URLS) else ds.url(image_id)
        ls.add_task(1000 + n, PROJECT, url)
        ls.annotate(1 + n, 1000 + n, single_region(ds, image_id, which=n))
    model_dir = tmp_path / "models"
    backend = start_backend(tmp_path, "round2-api", model_dir, {
        "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": TOKEN, "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD, "LOCAL_FILES_DOCUMENT_ROOT": str(ds.root)})
    good = ANNOTATIONS - len(BAD_URLS)
    tail = LogTail(backend.log_path)

    def webhook(payload: dict):
        return call(backend, "POST", "/webhook", auth=None, json=payload)  # as Label Studio sends: no credentials

    def resync_skips_bad_tasks() -> list[str]:
        assert call(backend, "POST", "/setup", json=setup_body()).status_code == 200
        wait_idle(backend, lambda m: m["counters"].get("resyncs", 0) + m["counters"].get("events_failed", 0) >= 1,
                  timeout=300, what="the first resync to end")
        synced = len(load_memory(model_dir).reference_ids())
        problems = [] if synced == good else [f"{synced} of {ANNOTATIONS} annotations synced, {good} expected"]
        assert call(backend, "POST", "/setup", json=setup_body()).status_code == 200
        m = wait_idle(backend, timeout=120)
        if m["counters"].get("resyncs", 0) != 1 or m["counters"].get("events_failed", 0):
            problems.append(f"/setup re-ran the resync: {m['counters']}")
        text = tail.read()
        return problems + [f"no log line for {url}" for url in BAD_URLS if url not in text]

    def forged_start_training_creates_nothing() -> list[str]:
        for project in range(990, 1000):
            assert webhook({"action": "START_TRAINING", "project": {"id": project}}).status_code == 200
        wait_idle(backend, timeout=120)
        return [f"MODEL_DIR/{p} was created" for p in range(990, 1000) if (model_dir / str(p)).exists()]

    def reads_per_event(payload: dict, what: str) -> list[str]:
        revision = gauge(metrics(backend)).get("revision")
        before = ls.hit_count("/api/")
        assert webhook(payload).status_code == 200
        m = wait_idle(backend, timeout=300)
        reads = ls.hit_count("/api/") - before
        problems = [] if reads <= 20 else [f"{what} cost {reads} Label Studio reads"]
        if gauge(m).get("revision") != revision or len(load_memory(model_dir).reference_ids()) != good:
            problems.append("the memory changed")
        return problems

    ids = [{"id": n} for n in range(1, 2001)]
    cases = [
        Case("defect 4", f"resync of {ANNOTATIONS} annotations, {len(BAD_URLS)} task images malformed",
             resync_skips_bad_tasks),
        Case("defect 13", "unauthenticated START_TRAINING for 10 nonexistent projects",
             forged_start_training_creates_nothing),
        Case("bound", "ANNOTATIONS_CREATED naming 2000 ids", lambda: reads_per_event(
            {"action": "ANNOTATIONS_CREATED", "annotation": ids, "project": {"id": PROJECT}}, "2000 ids")),
        Case("bound", "ANNOTATIONS_DELETED naming 20,000 ids", lambda: reads_per_event(
            {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": n} for n in range(1, 20_001)],
             "project": {"id": PROJECT}}, "20,000 ids")),
    ]
    try:
        held, failures = run_cases(cases, lambda: backend.proc.poll() is None)
        reads = ls.hit_count("/api/")
    finally:
        backend.stop()
        ls.stop()
    figure("8 round 2 (API mode)", f"{held}/{len(cases)} attacks handled: {good}/{ANNOTATIONS} annotations resynced "
                                   f"around {len(BAD_URLS)} malformed task URLs, no directory for forged projects, "
                                   f"events of 2000 and 20,000 ids coalesced into resyncs ({reads} API reads in all)")
    assert not failures, "\n".join(failures)
