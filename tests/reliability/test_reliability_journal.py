"""Figure 24 (outage): a webhook accepted while the state database (a real PostgreSQL) is down, by a backend process
then killed with kill -9 before the database came back, is applied by the next process started on its MODEL_DIR:
nothing /webhook accepted is lost (payload mode: there is no Label Studio to resync from)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from local_stack import wait_until
from support.backend_helpers import annotation_result, created_webhook
from support.local_postgres import LocalPostgres
from support.reliability import call, kill9, setup_body, start_backend, stored
from labelstudio_backend.store.database import SqlProjectStore
from labelstudio_backend.store.legacy import AsStored

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(400)]


def _stored_ids(url: str, model_dir: Path) -> set[str]:
    return SqlProjectStore(url, model_dir, AsStored, lock_timeout=30).snapshot(4).memory.reference_ids()


def test_an_event_accepted_during_an_outage_survives_kill9(tmp_path, rel_dataset, figure):
    ds = rel_dataset
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="ntt-pg-journal-")) / "server")
    server.start()
    model_dir = tmp_path / "models"
    env = {"LOCAL_FILES_DOCUMENT_ROOT": str(ds.root), "NTT_STATE_URL": server.new_database(),
           "NTT_REFRESH_TASKS": "0", "NTT_WEBHOOK_APPLY_WAIT_S": "0.5"}
    first, second = ds.positive_ids()[:2]
    backend = start_backend(tmp_path, "journal", model_dir, env)
    try:
        assert call(backend, "POST", "/setup", json=setup_body()).status_code == 200
        assert call(backend, "POST", "/webhook",
                    json=created_webhook(ds, 900, first, annotation_result(ds, first))).status_code == 200
        wait_until(lambda: "annotation:900" in _stored_ids(env["NTT_STATE_URL"], model_dir), 120, interval=0.2,
                   what="annotation 900 stored", proc=backend.proc, log=backend.log_path)
        server.pause()
        response = call(backend, "POST", "/webhook",
                        json=created_webhook(ds, 901, second, annotation_result(ds, second)))
        assert response.status_code == 200 and response.json()["status"] == "queued", response.text
        kill9(backend)  # the database still down: the event was never applied
        server.resume()
        assert _stored_ids(env["NTT_STATE_URL"], model_dir) == {"annotation:900"}

        backend = start_backend(tmp_path, "journal", model_dir, env)
        wait_until(lambda: "annotation:901" in _stored_ids(env["NTT_STATE_URL"], model_dir), 120, interval=0.2,
                   what="annotation 901 applied after the restart", proc=backend.proc, log=backend.log_path)
        recovered = call(backend, "GET", "/metrics").json()["counters"].get("lost_events_recovered")
        assert recovered == 1, recovered
        assert list((model_dir / ".journal").glob("*/*.json")) == []
        assert stored(model_dir) is None  # nothing went to a local SQLite meanwhile
    finally:
        backend.stop()
        server.stop()
        shutil.rmtree(server.folder.parent, ignore_errors=True)
    figure("24 outage + kill -9", "a webhook accepted (200 queued) while PostgreSQL was down, the backend then killed "
           "with kill -9 before it came back: applied by the next process on the same MODEL_DIR (journal replayed, "
           "1 event recovered), nothing left in the journal")
