"""Two backend replicas (separate processes with separate MODEL_DIRs, standing for two machines) serving one project
from one real PostgreSQL server, in API mode against the fake Label Studio: an annotation applied through one is in
the next prediction of the other; 50 concurrent webhooks spread over both give exactly the memory applying them one
by one gives, with every revision either replica reports moving forward only; a replica killed with kill -9 while it
holds an accepted event loses nothing (its pending-events row outlives it, and the other replica's /setup resyncs)."""
from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from labelstudio_backend.store.versions import revision_of
from support.backend_helpers import LABEL_CONFIG, PROJECT, task_for
from support.local_servers import TOKEN, FakeLabelStudio, slow
from support.reliability import (api_webhook, call, gauge, kill9, metrics, setup_body, single_region, start_backend,
                                 wait_idle, wait_until)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

NEW = 40
DUPLICATES = 10


def _stored(url: str):
    from labelstudio_backend.store.database import SqlProjectStore
    from labelstudio_backend.store.legacy import AsStored

    return SqlProjectStore(url, "/nonexistent", AsStored, lock_timeout=30).snapshot(PROJECT)


def test_two_replicas_serve_one_project_from_postgresql(tmp_path, rel_dataset, postgres, figure):
    ds = rel_dataset
    positives = ds.positive_ids()
    ls = FakeLabelStudio().start()
    ls.add_project(PROJECT, LABEL_CONFIG)
    tasks = {i: ls.add_task(100 + i, PROJECT, ds.url(i)) for i in positives}
    url = postgres.new_database()
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": TOKEN, "LOCAL_FILES_DOCUMENT_ROOT": str(ds.root),
           "NTT_STATE_URL": url}
    replicas = [start_backend(tmp_path, f"replica-{name}", tmp_path / f"models-{name}", env) for name in "ab"]
    a, b = replicas
    try:
        for replica in replicas:
            assert call(replica, "POST", "/setup", json=setup_body()).status_code == 200
            wait_idle(replica)

        # 1. applied through A, predicted by B at once
        for annotation_id, image_id in ((1, positives[0]), (2, positives[1])):
            ls.annotate(annotation_id, tasks[image_id], single_region(ds, image_id))
            assert call(a, "POST", "/webhook", auth=None,
                        json=api_webhook("ANNOTATION_CREATED", annotation_id, tasks[image_id])).status_code == 200
        version = call(b, "POST", "/setup", json=setup_body()).json()["model_version"]
        assert revision_of(version) == 2, version
        body = {"tasks": [task_for(ds, positives[2])], "project": f"{PROJECT}.1795614847", "label_config": LABEL_CONFIG,
                "params": {"login": None, "password": None, "context": None}}
        predicted = call(b, "POST", "/predict", json=body).json()["results"][0]
        assert predicted["model_version"] == version and predicted["result"]

        # 2. 50 webhooks at once, spread over both replicas, while both report their revision
        expected = {f"annotation:{k}": single_region(ds, positives[k % 2])[0]["value"]["brushlabels"][0]
                    for k in (1, 2)}
        ids = []
        for k in range(NEW):
            image_id = positives[k % len(positives)]
            which = (k // len(positives)) % len(ds.instances(image_id))
            result = single_region(ds, image_id, which=which)
            ls.annotate(1000 + k, tasks[image_id], result)
            expected[f"annotation:{1000 + k}"] = result[0]["value"]["brushlabels"][0]
            ids.append((1000 + k, tasks[image_id]))
        rng = random.Random(5)
        ids += rng.sample(ids, DUPLICATES)
        rng.shuffle(ids)
        seen: dict[str, list[int]] = {"a": [], "b": []}
        stop = threading.Event()

        def watch(name: str, replica) -> None:
            while not stop.is_set():
                revision = gauge(metrics(replica)).get("revision")
                if revision is not None:
                    seen[name].append(revision)
                time.sleep(0.02)

        watchers = [threading.Thread(target=watch, args=(n, r), daemon=True) for n, r in zip("ab", replicas)]
        for thread in watchers:
            thread.start()
        barrier = threading.Barrier(len(ids))

        def send(item: tuple[int, int]) -> int:
            annotation_id, task_id = item
            replica = replicas[annotation_id % 2]
            barrier.wait(timeout=30)
            return call(replica, "POST", "/webhook", auth=None, timeout=60,
                        json=api_webhook("ANNOTATION_CREATED", annotation_id, task_id)).status_code

        with ThreadPoolExecutor(len(ids)) as pool:
            statuses = list(pool.map(send, ids))
        final_revision = 2 + NEW
        wait_until(lambda: _stored(url).memory.revision >= final_revision, 180, interval=0.2,
                   what=f"revision {final_revision} in the database")
        for replica in replicas:
            wait_idle(replica)
        time.sleep(1.0)
        stop.set()
        for thread in watchers:
            thread.join(30)
        snap = _stored(url)
        assert statuses == [200] * len(ids)
        assert snap.memory.reference_ids() == set(expected), sorted(snap.memory.reference_ids() ^ set(expected))
        assert all([e.label for e in snap.memory.entries(ref)] == [label] for ref, label in expected.items())
        assert snap.memory.revision == final_revision == snap.state.revision
        for name, revisions in seen.items():
            assert revisions and revisions == sorted(revisions), f"replica {name} reported {revisions}"
        assert {gauge(metrics(r))["revision"] for r in replicas} == {final_revision}

        # 3. kill -9 while holding an accepted event: the other replica's /setup finds it lost and resyncs
        ls.routes["/data/upload/slow.png"] = slow(6, (ds.root / "images" / f"{positives[3]:06d}.png").read_bytes())
        slow_task = ls.add_task(900, PROJECT, "/data/upload/slow.png")
        ls.annotate(2000, slow_task, single_region(ds, positives[3]))
        assert call(a, "POST", "/webhook", auth=None,
                    json=api_webhook("ANNOTATION_CREATED", 2000, slow_task)).status_code == 200
        kill9(a)
        assert call(b, "POST", "/setup", json=setup_body()).status_code == 200
        wait_until(lambda: "annotation:2000" in _stored(url).memory, 120, interval=0.2,
                   what="the killed replica's event, recovered by the other")
        recovered = metrics(b)["counters"].get("lost_events_recovered", 0)
        assert recovered == 1, recovered
    finally:
        for replica in replicas:
            replica.stop()
        ls.stop()
    figure("24 replicas (PostgreSQL)", f"2 replicas, {len(ids)} webhooks at once ({DUPLICATES} duplicates): memory "
                                       f"exact, revision {final_revision}, revisions seen only rising "
                                       f"({len(seen['a'])}+{len(seen['b'])} samples); kill -9 with an accepted event: "
                                       "recovered by the other replica's /setup")
