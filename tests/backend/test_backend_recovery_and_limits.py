"""Unit-level checks of what the reliability suite (tests/reliability, issue 7) found and fixed: no-op events keep
the revision, malformed results are not negatives, brush memory bombs, project-id bounds, crash recovery of the
project store, pending-event markers, the /predict admission queue, download deadlines, gunicorn's bind address."""
from __future__ import annotations

import importlib
import json
import os
import socket
import threading
import time

import pytest

from labelstudio_backend.store import pending_markers as pending_module
from labelstudio_backend.fetch.images import ImageFetchError, ImageLoader
from labelstudio_backend.labelstudio.label_config import parse_label_config
from labelstudio_backend.store.pending_markers import PendingMarkers
from labelstudio_backend.labelstudio.ids import parse_project_id
from labelstudio_backend.store.projects import ProjectError
from labelstudio_backend.labelstudio.regions import RegionError, encode_brush, parse_region
from labelstudio_backend.runtime import limit_malloc_arenas
from labelstudio_backend.settings import Settings
from ntt_engine import MemoryBank

from support.backend_helpers import (LABEL_CONFIG, PROJECT, annotation_result, created_webhook, sample, send, setup, snap,
                             task_for)
from support.fake_ls import FakeLabelStudio


# ------------------------------------------------------------------------------------------------ events

def api_mode_app(make_app, ls):
    """An app in API mode whose Label Studio API is the in-memory fake `ls`."""
    def use_fake(runtime):
        runtime.api = ls

    return make_app(runtime_hook=use_fake, label_studio_url="http://ls.test:8080", label_studio_api_key="legacy-token")

def test_a_duplicate_event_keeps_the_revision(app, client, dataset):
    image_id = dataset.positive_ids()[0]
    payload = created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id))
    send(app, client, payload)
    revision = snap(app).memory.revision
    send(app, client, payload)
    send(app, client, {**payload, "action": "ANNOTATION_UPDATED"})  # same content, same updated_at
    assert snap(app).memory.revision == revision


def test_a_duplicate_negative_keeps_the_revision(app, client, dataset):
    payload = created_webhook(dataset, 8, dataset.negative_ids()[0], [])
    send(app, client, payload)
    revision = snap(app).memory.revision
    send(app, client, payload)
    assert snap(app).memory.revision == revision and snap(app).memory.negative_images == {"annotation:8"}


@pytest.mark.parametrize("result", ["oops", None, {"type": "brushlabels"}, 7])
def test_a_result_that_is_not_a_list_is_ignored_not_a_negative(app, client, dataset, result):
    payload = created_webhook(dataset, 3, dataset.positive_ids()[0], [])
    payload["annotation"]["result"] = result
    send(app, client, payload)
    assert snap(app).memory.revision == 0 and not snap(app).state.annotations


def _api_project_with_annotation_7(make_app, dataset):
    """An API-mode app whose fake Label Studio holds annotation 7 of the first positive image, learnt through its
    webhook: (ls, app, client, image id)."""
    ls = FakeLabelStudio(dataset)
    app = api_mode_app(make_app, ls)
    client = app.test_client()
    image_id = dataset.positive_ids()[0]
    ls.annotate(7, ls.add_task(image_id), annotation_result(dataset, image_id))
    send(app, client, created_webhook(dataset, 7, image_id, []))
    return ls, app, client, image_id


def test_forged_update_of_a_real_annotation_changes_nothing_in_api_mode(make_app, dataset):
    ls, app, client, image_id = _api_project_with_annotation_7(make_app, dataset)
    revision = snap(app).memory.revision
    assert revision == 1
    forged = created_webhook(dataset, 7, image_id, annotation_result(dataset, dataset.positive_ids()[1]),
                             action="ANNOTATION_UPDATED")
    send(app, client, forged)
    assert snap(app).memory.revision == revision


def test_resync_removes_a_memory_reference_without_a_state_record(make_app, dataset):
    """After a crash between the memory write and the state write, a reference may lack its record: a resync must
    still notice that Label Studio no longer has it."""
    ls, app, client, image_id = _api_project_with_annotation_7(make_app, dataset)
    store = app.extensions["ntt"].runtime.store
    with store.edit(PROJECT) as current:
        current.state.annotations.clear()  # the record is gone, the reference is not
    del ls.annotations[7]
    send(app, client, sample("webhook_START_TRAINING"))
    assert snap(app).memory.reference_ids() == set()


# ------------------------------------------------------------------------------------------------ input bounds
def test_brush_claiming_a_huge_canvas_is_refused_before_decoding():
    config = parse_label_config(LABEL_CONFIG)
    rle = encode_brush(__import__("numpy").ones((120, 160), bool))
    item = {"type": "brushlabels", "from_name": "brush", "to_name": "image", "original_width": 30000,
            "original_height": 30000, "value": {"format": "rle", "rle": rle, "brushlabels": ["red_stripes"]}}
    with pytest.raises(RegionError, match="claims a 30000x30000 image"):
        parse_region(item, config, (120, 160))
    item.update(original_width=120, original_height=160)  # a rotated (EXIF) canvas of the same size is fine
    assert parse_region(item, config, (120, 160)).mask.shape == (120, 160)


@pytest.mark.parametrize("value", ["9" * 40, 2 ** 63, "-1", -5])
def test_absurd_project_ids_are_refused(value):
    with pytest.raises(ValueError):
        parse_project_id(value)


def test_setup_with_an_absurd_project_id_is_a_400(client):
    response = client.post("/setup", json={**sample("setup_from_LS"), "project": "9" * 400, "schema": LABEL_CONFIG})
    assert response.status_code == 400


# ------------------------------------------------------------------------------------------------ the project store
# These are the file store's own recoveries (NTT_STATE_URL=files, the state of earlier versions); the database store's
# are in tests/store.
def _store(app):
    return app.extensions["ntt"].runtime.store


@pytest.fixture
def files_app(make_app):
    return make_app(state_url="files")


@pytest.fixture
def files_client(files_app):
    return files_app.test_client()


def test_a_dead_writers_temporary_file_is_removed_and_flags_a_resync(files_app, files_client, dataset):
    image_id = dataset.positive_ids()[0]
    send(files_app, files_client, created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id)))
    store = _store(files_app)
    with store.edit(PROJECT) as current:
        current.state.synced_at = 123.0
    directory = store.project_dir(PROJECT)
    (directory / ".memory.ntt.abc123.tmp").write_bytes(b"half a memory")
    store._cache.clear()
    recovered = store.snapshot(PROJECT)  # a read repairs its copy, and writes nothing (it may run on a full disk)
    assert recovered.state.synced_at is None and recovered.memory.reference_ids() == {"annotation:3"}
    assert list(directory.glob(".*.tmp")) and '"synced_at": 123.0' in (directory / "state.json").read_text()
    with store.edit(PROJECT):  # the next write repairs the files
        pass
    assert not list(directory.glob(".*.tmp"))
    assert store.snapshot(PROJECT).state.synced_at is None and '"synced_at": null' in (directory / "state.json").read_text()


def test_a_memory_newer_than_its_state_gets_its_records_back(files_app, files_client, dataset):
    first, second = dataset.positive_ids()[:2]
    send(files_app, files_client, created_webhook(dataset, 3, first, annotation_result(dataset, first)))
    store = _store(files_app)
    directory = store.project_dir(PROJECT)
    state_before = (directory / "state.json").read_text()
    send(files_app, files_client, created_webhook(dataset, 5, second, annotation_result(dataset, second)))
    (directory / "state.json").write_text(state_before)  # as if killed between the two renames
    store._cache.clear()
    recovered = store.snapshot(PROJECT)
    assert set(recovered.state.annotations) == {"3", "5"}
    assert recovered.state.annotations["5"].updated_at is None  # any later event or resync re-applies it
    assert recovered.state.revision == recovered.memory.revision == 2
    assert json.loads((directory / "state.json").read_text())["revision"] == 1  # a read writes nothing
    with store.edit(PROJECT):  # the next write does
        pass
    assert json.loads((directory / "state.json").read_text())["revision"] == 2


def test_an_unreadable_memory_is_a_503_and_is_not_set_aside(files_app, files_client, dataset):
    image_id = dataset.positive_ids()[0]
    send(files_app, files_client, created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id)))
    store = _store(files_app)
    memory_path = store.project_dir(PROJECT) / "memory.ntt"
    original = memory_path.read_bytes()
    memory_path.unlink()
    memory_path.mkdir()  # reading it fails with an OSError, as an I/O error would
    store._cache.clear()
    try:
        with pytest.raises(ProjectError, match="cannot read"):
            store.snapshot(PROJECT)
        response = files_client.post("/setup", json={**sample("setup_from_LS"), "schema": LABEL_CONFIG})
        assert response.status_code == 503 and response.headers.get("Retry-After")
    finally:
        memory_path.rmdir()
        memory_path.write_bytes(original)
    assert not list(store.project_dir(PROJECT).glob("memory.ntt.incompatible-*"))
    store._cache.clear()
    assert MemoryBank.from_bytes(original).reference_ids() == store.snapshot(PROJECT).memory.reference_ids()


def test_the_crash_tests_write_pause_pauses_in_both_phases(make_app, dataset, caplog, monkeypatch):
    from labelstudio_backend.store import projects
    from support.paused_backend import install

    monkeypatch.setattr(projects, "atomic_write_bytes", projects.atomic_write_bytes)  # undone after the test
    install(0.01)
    app = make_app(state_url="files")
    client = app.test_client()
    image_id = dataset.positive_ids()[0]
    with caplog.at_level("WARNING"):
        send(app, client, created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id)))
    assert "phase=temp-written" in caplog.text and "phase=memory-renamed" in caplog.text


def test_a_webhook_whose_event_fails_says_so(files_app, files_client, dataset):
    """An event that raised in the worker (here: the project's state.json is unreadable) used to be answered
    {"status": "applied"}; now the answer says what failed (503, as every route answers a store it cannot read),
    and events_failed counts it."""
    setup(files_client)
    store = files_app.extensions["ntt"].runtime.store
    (store.project_dir(PROJECT) / "state.json").write_text("{ not json")
    store._cache.clear()
    image_id = dataset.positive_ids()[0]
    response = files_client.post("/webhook", json=created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id)))
    assert response.status_code == 503 and response.headers.get("Retry-After"), response.json
    assert "could not be applied" in response.json["error"] and "state.json" in response.json["error"]
    assert files_app.extensions["ntt"].runtime.metrics.counters["events_failed"] == 1


# ------------------------------------------------------------------------------------------------ pending markers
def test_pending_markers_of_live_and_dead_processes(tmp_path):
    if pending_module.fcntl is None:
        pytest.skip("no flock on this platform")
    live, other = PendingMarkers(tmp_path), PendingMarkers(tmp_path)
    live.hold(4)
    live.hold(4)
    assert live.path(4).exists()
    assert other.claim_orphans(4) == []  # its owner holds the lock
    live.release(4)
    assert live.path(4).exists()
    live.release(4)
    assert not live.path(4).exists()
    (tmp_path / ".pending" / "4.12345-deadbeef").write_text("12345\n")  # what a killed process leaves
    (tmp_path / ".pending" / "40.12345-deadbeef").write_text("12345\n")  # another project's
    assert other.claim_orphans(4) == ["4.12345-deadbeef"]
    assert other.claim_orphans(4) == []
    assert not (tmp_path / "4").exists()  # nothing in the project's directory


def test_setup_resyncs_a_project_whose_events_died_with_a_process(make_app, dataset):
    ls = FakeLabelStudio(dataset)

    app = api_mode_app(make_app, ls)
    client = app.test_client()
    image_id = dataset.positive_ids()[0]
    setup(client)
    assert app.extensions["ntt"].worker.wait_idle(60)
    ls.annotate(7, ls.add_task(image_id), annotation_result(dataset, image_id))  # its webhook was lost
    (_store(app).model_dir / ".pending" / f"{PROJECT}.999-cafe").write_text("999\n")
    setup(client)
    assert app.extensions["ntt"].worker.wait_idle(60)
    assert snap(app).memory.reference_ids() == {"annotation:7"}
    assert app.extensions["ntt"].runtime.metrics.counters["lost_events_recovered"] == 1


# ------------------------------------------------------------------------------------------------ admission
def test_predict_beyond_the_admitted_slots_is_a_503_with_retry_after(make_app, dataset):
    app = make_app(max_pending_predicts=1)
    client = app.test_client()
    setup(client)
    backend = app.extensions["ntt"]
    inside, release = threading.Event(), threading.Event()
    real = backend.predictor.predict_tasks

    def slow_predict(*args, **kwargs):
        inside.set()
        release.wait(30)
        return real(*args, **kwargs)

    backend.predictor.predict_tasks = slow_predict
    body = {**sample("predict_batch_from_LS"), "tasks": [task_for(dataset, 1)], "label_config": LABEL_CONFIG}
    answers = []
    first = threading.Thread(target=lambda: answers.append(app.test_client().post("/predict", json=body)))
    first.start()
    assert inside.wait(30)
    busy = client.post("/predict", json=body)
    release.set()
    first.join(30)
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1 and "busy" in busy.json["error"]
    assert answers[0].status_code == 200
    assert client.post("/predict", json=body).status_code == 200  # the slot is free again
    assert client.get("/metrics").json["predict_slots"] == 1


def test_train_bodies_count_against_the_queue_byte_bound_like_webhooks(make_app, dataset):
    """A /train body holds annotations the worker will apply, as a webhook's does: both are refused (503) once the
    queued events would pass NTT_QUEUE_MAX_BYTES (the worker is stopped here, so nothing leaves the queue)."""
    image_id = dataset.positive_ids()[0]
    webhook = created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id))
    size = len(json.dumps(webhook))
    app = make_app(queue_max_bytes=int(size * 1.5), webhook_wait=0.0)
    client = app.test_client()
    setup(client)
    app.extensions["ntt"].worker.stop()
    assert client.post("/webhook", json=webhook).status_code == 200
    task = {**webhook["task"], "annotations": [{**webhook["annotation"], "id": 4}]}
    train = client.post("/train", json={"project": PROJECT, "annotations": [task]})
    assert train.status_code == 503 and train.headers.get("Retry-After"), train.json
    assert client.post("/webhook", json=created_webhook(dataset, 5, image_id, webhook["annotation"]["result"])
                       ).status_code == 503


def test_default_slots_leave_threads_for_the_other_routes():
    assert Settings(threads=8).predict_slots == 6
    assert Settings(threads=1).predict_slots == 1
    assert Settings(threads=8, max_pending_predicts=3).predict_slots == 3


# ------------------------------------------------------------------------------------------------ download deadline
def _trickling_server(kind: str) -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve():
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            try:
                conn.recv(65536)
                if kind == "headers":
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                for n in range(60):  # at most 6 s
                    conn.sendall(b"X-A: b\r\n" if kind == "headers" else b"x")
                    time.sleep(0.1)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


@pytest.mark.parametrize("kind", ["headers", "body"])
def test_a_trickling_server_is_cut_at_the_download_deadline(kind):
    server, port = _trickling_server(kind)
    settings = Settings(allowed_hosts=("127.0.0.1",), allow_private_networks=True, download_timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(ImageFetchError, match="timed out"):
            ImageLoader(settings).read(f"http://127.0.0.1:{port}/x.png")
    finally:
        server.close()
    assert time.monotonic() - started < 2.5


# ------------------------------------------------------------------------------------------------ process setup
def test_gunicorn_binds_to_host(monkeypatch):
    import labelstudio_backend.gunicorn_conf as conf

    monkeypatch.delenv("GUNICORN_BIND", raising=False)
    monkeypatch.setenv("PORT", "9191")
    monkeypatch.setenv("HOST", "127.0.0.1")
    assert importlib.reload(conf).bind == "127.0.0.1:9191"
    monkeypatch.setenv("HOST", "http://label.example.com")  # Label Studio's meaning of HOST: not an address
    assert importlib.reload(conf).bind == "0.0.0.0:9191"
    monkeypatch.delenv("HOST")
    assert importlib.reload(conf).bind == "0.0.0.0:9191"


def test_malloc_arena_cap_respects_an_explicit_environment(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas(2) is False
    assert limit_malloc_arenas(0) is False
    assert os.environ["MALLOC_ARENA_MAX"] == "4"
