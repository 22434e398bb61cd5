"""Figure 2: 50 annotation webhooks for one project sent at once to gunicorn with 3 worker processes, while
/predict and /metrics are served. Payload mode (no API key): each webhook body is applied as it comes, so all the
concurrency lands on the backend's own machinery (per-process queues, per-project file lock, atomic writes, cache
invalidation); API mode only adds reads from Label Studio before the same locked write path.

The memory must end with exactly the expected references, its revision must move once per real change (10 of the
50 webhooks are duplicates, which change nothing), and every prediction and /metrics snapshot served meanwhile must
come from a complete memory: same model_version, same predictions; references, annotations and revision in step."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from labelstudio_backend.store.versions import revision_of
from support.backend_helpers import LABEL_CONFIG, PROJECT, created_webhook, task_for
from support.reliability import (call, gauge, load_memory, load_state, metrics, setup_body, single_region, start_backend, strip_ids,
                         wait_until)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

WORKERS = 3
NEW = 40
DUPLICATES = 10


def test_concurrent_webhooks_on_several_workers(tmp_path, rel_dataset, figure):
    ds = rel_dataset
    positives = ds.positive_ids()
    model_dir = tmp_path / "models"
    backend = start_backend(tmp_path, "concurrency", model_dir, {"LOCAL_FILES_DOCUMENT_ROOT": str(ds.root)},
                            workers=WORKERS)
    try:
        _run(backend, ds, positives, model_dir, figure)
    finally:
        backend.stop()


def _run(backend, ds, positives, model_dir, figure) -> None:
    assert call(backend, "POST", "/setup", json=setup_body()).status_code == 200
    # the scene: two references, so that predictions run the engine
    expected: dict[str, str] = {}  # ref id -> label
    for annotation_id, image_id in ((1, positives[0]), (2, positives[1])):
        result = single_region(ds, image_id)
        expected[f"annotation:{annotation_id}"] = result[0]["value"]["brushlabels"][0]
        assert call(backend, "POST", "/webhook", json=created_webhook(ds, annotation_id, image_id, result)).ok
    wait_until(lambda: _revision(model_dir) == 2, 60, interval=0.1, what="the two first references")
    base_revision = 2

    # 40 new annotations (one region each) and 10 exact duplicates, shuffled
    payloads = []
    for k in range(NEW):
        image_id = positives[k % len(positives)]
        which = (k // len(positives)) % len(ds.instances(image_id))
        result = single_region(ds, image_id, which=which)
        annotation_id = 1000 + k
        expected[f"annotation:{annotation_id}"] = result[0]["value"]["brushlabels"][0]
        payloads.append(created_webhook(ds, annotation_id, image_id, result))
    rng = random.Random(7)
    payloads += [json.loads(json.dumps(p)) for p in rng.sample(payloads, DUPLICATES)]
    rng.shuffle(payloads)
    final_revision = base_revision + NEW

    predict_body = {"tasks": [task_for(ds, positives[2]), task_for(ds, positives[5])],
                    "project": f"{PROJECT}.1795614847", "label_config": LABEL_CONFIG,
                    "params": {"login": None, "password": None, "context": None}}
    stop = threading.Event()
    predictions: list[tuple[int, str, list]] = []
    snapshots: list[dict] = []

    def predict_loop() -> None:
        while not stop.is_set():
            response = call(backend, "POST", "/predict", json=predict_body, timeout=60)
            body = response.json() if response.status_code == 200 else {}
            results = body.get("results", [])
            predictions.append((response.status_code, results[0]["model_version"] if results else "",
                                strip_ids(results)))

    def metrics_loop() -> None:
        while not stop.is_set():
            snapshots.append(gauge(metrics(backend)))
            time.sleep(0.02)

    watchers = [threading.Thread(target=predict_loop, daemon=True) for _ in range(2)] + \
        [threading.Thread(target=metrics_loop, daemon=True)]
    for thread in watchers:
        thread.start()
    barrier = threading.Barrier(len(payloads))

    def send(payload: dict) -> int:
        barrier.wait(timeout=30)
        return call(backend, "POST", "/webhook", json=payload, timeout=30).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(len(payloads)) as pool:
        statuses = list(pool.map(send, payloads))
    answered = time.monotonic() - started
    try:
        wait_until(lambda: _revision(model_dir) >= final_revision, 120, interval=0.1,
                   what=f"memory revision {final_revision}", proc=backend.proc, log=backend.log_path)
        applied = time.monotonic() - started
        time.sleep(2.0)  # anything still queued anywhere would move the revision past the final one
        # every worker idle: ask /metrics often enough to reach each process
        idle = [metrics(backend) for _ in range(12)]
    finally:
        stop.set()
        for thread in watchers:
            thread.join(60)

    memory = load_memory(model_dir)
    state = load_state(model_dir)
    assert statuses == [200] * len(payloads)
    assert all(m["queue_length"] == 0 for m in idle)
    assert memory.reference_ids() == set(expected), sorted(memory.reference_ids() ^ set(expected))
    labels_ok = all([e.label for e in memory.entries(ref)] == [label] for ref, label in expected.items())
    assert labels_ok
    assert memory.revision == final_revision, f"revision {memory.revision}, expected {final_revision}"
    assert state.revision == memory.revision and set(state.annotations) == {r.split(":")[1] for r in expected}

    # predictions served meanwhile: all answered, each from a complete memory
    codes = defaultdict(int)
    by_version: dict[str, set] = defaultdict(set)
    for code, version, results in predictions:
        codes[code] += 1
        if code == 200:
            by_version[version].add(json.dumps(results, sort_keys=True))
    revisions = sorted(revision_of(v) for v in by_version)
    assert set(codes) == {200}, dict(codes)
    assert revisions and base_revision <= revisions[0] and revisions[-1] <= final_revision
    inconsistent_versions = [v for v, outputs in by_version.items() if len(outputs) != 1]
    assert not inconsistent_versions, inconsistent_versions  # one model_version, one memory, one answer

    # /metrics snapshots (any worker): references, annotation records and revision always in step
    base_entries = 2
    snapshots = [g for g in snapshots if g and g.get("revision") is not None]  # a worker still loading: no gauge
    torn = [g for g in snapshots if not (
        sum(g["references"].values()) - base_entries == g["revision"] - base_revision == g["annotations"] - 2)]
    assert not torn, torn[:3]
    assert "Traceback" not in backend.log(100000)

    figure("2 concurrency",
           f"{len(payloads)} webhooks ({NEW} new annotations + {DUPLICATES} duplicates) sent at once to gunicorn with "
           f"{WORKERS} workers: all answered 200 in {answered:.1f} s, applied in {applied:.1f} s; memory ends with "
           f"exactly the {len(expected)} expected references (right labels), revision {base_revision} -> "
           f"{memory.revision} (+{memory.revision - base_revision}: once per change, duplicates not counted); "
           f"meanwhile {sum(codes.values())} /predict all 200 over {len(by_version)} model_versions (each version "
           f"always the same predictions) and {len(snapshots)} /metrics snapshots all consistent (references = "
           f"annotations = revision)")


def _revision(model_dir) -> int:
    try:
        return load_memory(model_dir).revision
    except Exception:  # noqa: BLE001 - not written yet
        return -1
