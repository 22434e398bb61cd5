"""The write-ahead journal of accepted events (store/journal.py): what a process dies holding is found by the next
one, in arrival order; what a live process holds is left alone; an unreadable entry is set aside, never applied and
never deleted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labelstudio_backend.labelstudio.webhooks import SyncJob
from labelstudio_backend.store.journal import DIRECTORY, EventJournal, JournalError, decode_job, encode_job

ROOT = Path(__file__).resolve().parents[2]

# a process that writes `jobs` into its journal, then dies without any cleanup (as kill -9 would leave it)
DYING_WRITER = """
import json, os, sys
from labelstudio_backend.labelstudio.webhooks import SyncJob
from labelstudio_backend.store.journal import EventJournal
journal = EventJournal(sys.argv[1])
for raw in json.loads(sys.stdin.read()):
    journal.write(SyncJob(raw["action"], raw["project"], tuple(raw["annotations"]), received_at=raw["at"]))
os._exit(0)
"""


def _die_holding(model_dir: Path, jobs: list[dict]) -> None:
    subprocess.run([sys.executable, "-c", DYING_WRITER, str(model_dir)], input=json.dumps(jobs), text=True,
                   cwd=ROOT, check=True, timeout=60)


def _job(action: str, annotation: int, at: float) -> dict:
    return {"action": action, "project": 4, "annotations": [{"id": annotation, "result": []}], "at": at}


def test_a_job_survives_its_encoding():
    job = SyncJob("ANNOTATION_CREATED", 4, ({"id": 7, "result": [{"type": "brushlabels"}]},),
                  tasks={12: {"id": 12, "data": {"image": "/data/local-files/?d=a.png"}}}, label_config="<View/>",
                  received_at=1234.5, size_bytes=99)
    assert decode_job(encode_job(job)) == job


def test_the_next_process_takes_over_a_dead_ones_events_in_arrival_order(tmp_path):
    _die_holding(tmp_path, [_job("ANNOTATION_CREATED", 1, 10.0), _job("ANNOTATION_UPDATED", 1, 30.0)])
    _die_holding(tmp_path, [_job("ANNOTATIONS_DELETED", 2, 20.0)])
    journal = EventJournal(tmp_path)
    orphans = journal.claim_orphans()
    assert [(job.action, job.annotation_ids) for job in orphans.jobs] == [
        ("ANNOTATION_CREATED", [1]), ("ANNOTATIONS_DELETED", [2]), ("ANNOTATION_UPDATED", [1])]
    assert EventJournal(tmp_path).claim_orphans().jobs == []  # locked by the process taking them over
    journal.discard(orphans)
    assert list((tmp_path / DIRECTORY).iterdir()) == []
    assert EventJournal(tmp_path).claim_orphans().jobs == []


def test_a_live_processs_events_are_left_alone(tmp_path):
    live = EventJournal(tmp_path)
    entry = live.write(SyncJob("ANNOTATION_CREATED", 4, ({"id": 3},)))
    assert EventJournal(tmp_path).claim_orphans().jobs == []
    live.remove(entry)
    assert not Path(entry).exists()


def test_an_unreadable_entry_is_set_aside_not_applied(tmp_path):
    _die_holding(tmp_path, [_job("ANNOTATION_CREATED", 1, 10.0), _job("ANNOTATION_CREATED", 2, 11.0)])
    folder = next((tmp_path / DIRECTORY).iterdir())
    first = sorted(folder.glob("*.json"))[0]
    first.write_bytes(b'{"action": "ANNOTATION_CREATED", "proj')  # torn by hand (the writer is atomic)
    journal = EventJournal(tmp_path)
    orphans = journal.claim_orphans()
    assert [job.annotation_ids for job in orphans.jobs] == [[2]]
    journal.discard(orphans)
    assert [p.name for p in folder.iterdir() if p.name != "owner"] == [first.with_suffix(".unreadable").name]


def test_an_unwritable_journal_says_so(tmp_path):
    (tmp_path / DIRECTORY).write_text("not a folder")
    with pytest.raises(JournalError, match="cannot write the event down"):
        EventJournal(tmp_path).write(SyncJob("ANNOTATION_CREATED", 4, ({"id": 3},)))
