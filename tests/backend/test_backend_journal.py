"""Accepted events are written down before /webhook answers (store/journal.py): a backend started on a MODEL_DIR
applies what a dead process accepted and never applied, and an event that cannot be written down is refused (503),
not accepted and lost."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.backend_helpers import PROJECT, annotation_result, created_webhook, send, setup, snap
from labelstudio_backend.store.journal import DIRECTORY

ROOT = Path(__file__).resolve().parents[2]

# a backend process that accepted webhook events, then died before applying them (kill -9 leaves exactly this)
ACCEPTED_THEN_DIED = """
import json, os, sys
from labelstudio_backend.labelstudio.webhooks import parse_webhook
from labelstudio_backend.store.journal import EventJournal
journal = EventJournal(sys.argv[1])
for payload in json.loads(sys.stdin.read()):
    journal.write(parse_webhook(payload))
os._exit(0)
"""


def test_events_a_dead_process_accepted_are_applied_by_the_next_one(make_app, dataset, tmp_path):
    model_dir = tmp_path / "models"
    first, second = dataset.positive_ids()[:2]
    payloads = [created_webhook(dataset, 11, first, annotation_result(dataset, first)),
                created_webhook(dataset, 12, second, annotation_result(dataset, second))]
    subprocess.run([sys.executable, "-c", ACCEPTED_THEN_DIED, str(model_dir)], input=json.dumps(payloads),
                   text=True, cwd=ROOT, check=True, timeout=60)
    assert len(list((model_dir / DIRECTORY).glob("*/*.json"))) == 2

    app = make_app()
    assert app.extensions["ntt"].worker.wait_idle(60)
    assert snap(app).memory.reference_ids() == {"annotation:11", "annotation:12"}
    assert app.extensions["ntt"].runtime.metrics.counters["lost_events_recovered"] == 2
    assert list((model_dir / DIRECTORY).glob("*/*.json")) == []  # applied: nothing left to replay

    make_app()  # a later start finds nothing more to apply
    assert snap(app).memory.revision == 2


def test_an_event_that_cannot_be_written_down_is_refused_and_changes_nothing(make_app, dataset, tmp_path):
    folder = tmp_path / "models" / DIRECTORY
    folder.parent.mkdir(parents=True)
    folder.write_text("a file where the journal's folder goes: nothing can be written down")
    app = make_app()
    client = app.test_client()
    setup(client)
    before = snap(app, PROJECT).memory.to_bytes()
    first = dataset.positive_ids()[0]
    webhook = created_webhook(dataset, 5, first, annotation_result(dataset, first))

    response = client.post("/webhook", json=webhook)
    assert response.status_code == 503 and response.headers["Retry-After"] == "10"
    assert "cannot write the event down" in response.json["error"] and "not accepted" in response.json["error"]
    assert app.extensions["ntt"].worker.pending == 0
    assert snap(app, PROJECT).memory.to_bytes() == before
    assert app.extensions["ntt"].runtime.metrics.counters["events_refused_unwritable"] == 1

    folder.unlink()  # the cause fixed: the same event, sent again, is accepted and applied
    send(app, client, webhook)
    assert snap(app, PROJECT).memory.reference_ids() == {"annotation:5"}
