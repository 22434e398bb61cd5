"""The state database going away (PostgreSQL stopped): an accepted webhook event is kept and applied once it is
back, in order; predictions meanwhile come from the memory last loaded, at once; an event that outlasts
NTT_STORE_RETRY_S stays written down and is queued again until the database is back."""
from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from local_stack import wait_until
from support.backend_helpers import (PROJECT, annotation_result, created_webhook, predict, send, setup, snap,
                                     task_for)
from support.local_postgres import LocalPostgres


@pytest.fixture
def server():
    """A PostgreSQL server of this test's own, which the test may stop (`pause`) and start again (`resume`)."""
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="ntt-pg-outage-")) / "server")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.folder.parent, ignore_errors=True)


def test_an_event_accepted_during_an_outage_is_applied_when_the_database_is_back(make_app, dataset, server):
    # /predict waits (bounded) for the project's pending events, but not for one that waits for the database
    app = make_app(state_url=server.new_database(), predict_wait=60.0)
    client = app.test_client()
    first, second = dataset.positive_ids()[:2]
    send(app, client, created_webhook(dataset, 3, first, annotation_result(dataset, first)))
    version = setup(client)
    server.pause()
    response = client.post("/webhook", json=created_webhook(dataset, 5, second,
                                                            annotation_result(dataset, second)))
    assert response.status_code in (200, 503), response.json  # accepted, or a clear 503 with Retry-After
    activity = app.extensions["ntt"].worker.activity
    wait_until(lambda: activity.stalled(PROJECT), 30, interval=0.05, what="the event to wait for the database")
    served = predict(client, [task_for(dataset, dataset.positive_ids()[2])])[0]
    assert served["model_version"] == version and served["result"]  # the memory last loaded, at once
    counters = app.extensions["ntt"].runtime.metrics.counters
    assert counters["fresh_waits_skipped_predict"] == 1 and "fresh_wait_timeouts_predict" not in counters
    resumed = threading.Timer(1.5, server.resume)
    resumed.start()
    assert app.extensions["ntt"].worker.wait_idle(60)
    resumed.join()
    assert snap(app).memory.reference_ids() == {"annotation:3", "annotation:5"}
    assert counters["events_retried"] >= 1 and counters.get("events_failed", 0) == 0
    assert snap(app, PROJECT).memory.revision == 2


def test_an_event_outlasting_the_retry_window_is_queued_again_until_the_database_is_back(make_app, dataset,
                                                                                          server, tmp_path):
    app = make_app(state_url=server.new_database(), store_retry_s=1.0)
    client = app.test_client()
    first, second = dataset.positive_ids()[:2]
    send(app, client, created_webhook(dataset, 3, first, annotation_result(dataset, first)))
    server.pause()
    response = client.post("/webhook", json=created_webhook(dataset, 5, second, annotation_result(dataset, second)))
    assert response.status_code == 200, response.json
    counters = app.extensions["ntt"].runtime.metrics.counters
    wait_until(lambda: counters.get("events_deferred", 0) >= 2, 60, interval=0.1,
               what="the event deferred twice (retried for NTT_STORE_RETRY_S, queued again, deferred again)")
    assert len(list((tmp_path / "models" / ".journal").glob("*/*.json"))) == 1  # still written down
    server.resume()
    wait_until(lambda: not list((tmp_path / "models" / ".journal").glob("*/*.json")), 60, interval=0.1,
               what="the deferred event applied and out of the journal")
    assert snap(app).memory.reference_ids() == {"annotation:3", "annotation:5"}
    assert counters.get("events_failed", 0) == 0 and snap(app).memory.revision == 2
