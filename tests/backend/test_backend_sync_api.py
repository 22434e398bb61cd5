"""API mode (LABEL_STUDIO_API_KEY set): webhooks are notifications, the data comes from Label Studio's API."""
import pytest

from labelstudio_backend.labelstudio.client import LabelStudioAPIError

from support.backend_helpers import LABEL_CONFIG, annotation_result, created_webhook, sample
from support.fake_ls import FakeLabelStudio

PROJECT = 4


@pytest.fixture
def ls(dataset):
    return FakeLabelStudio(dataset)


@pytest.fixture
def app(make_app, ls):
    def use_fake(runtime):
        runtime.api = ls

    return make_app(runtime_hook=use_fake, label_studio_url="http://ls.test:8080", label_studio_api_key="legacy-token")


@pytest.fixture
def client(app):
    return app.test_client()


def send(app, client, payload):
    assert client.post("/webhook", json=payload).status_code == 200
    assert app.extensions["ntt"].worker.wait_idle(60)


def memory(app, project=PROJECT):
    return app.extensions["ntt"].runtime.store.snapshot(project).memory


def test_forged_webhook_cannot_inject_references(app, client, ls, dataset):
    image_id = dataset.positive_ids()[0]
    ls.add_task(image_id)
    send(app, client, created_webhook(dataset, 99, image_id, annotation_result(dataset, image_id)))
    assert memory(app).revision == 0 and "annotation 99" in ls.calls


def test_annotation_is_read_from_the_api_not_the_payload(app, client, ls, dataset):
    image_id = dataset.positive_ids()[0]
    task = ls.add_task(image_id)
    real = annotation_result(dataset, image_id, "brush")
    ls.annotate(7, task, real[:1])
    send(app, client, created_webhook(dataset, 7, image_id, real))  # the payload claims more regions
    assert sum(memory(app).counts().values()) == 1


def test_project_comes_from_label_studio(app, client, ls, dataset):
    image_id = dataset.positive_ids()[0]
    ls.projects[9] = {"id": 9, "label_config": LABEL_CONFIG}
    task = ls.add_task(image_id, project=9)
    ls.annotate(7, task, annotation_result(dataset, image_id))
    send(app, client, created_webhook(dataset, 7, image_id, [], project=PROJECT))
    assert memory(app, 9).reference_ids() == {"annotation:7"}
    assert memory(app, PROJECT).revision == 0


def test_delete_is_checked_against_label_studio(app, client, ls, dataset):
    image_id = dataset.positive_ids()[0]
    task = ls.add_task(image_id)
    ls.annotate(3, task, annotation_result(dataset, image_id))
    send(app, client, created_webhook(dataset, 3, image_id, []))
    assert memory(app).reference_ids() == {"annotation:3"}
    send(app, client, sample("webhook_ANNOTATIONS_DELETED"))  # LS still has it: a forged delete
    assert memory(app).reference_ids() == {"annotation:3"}
    del ls.annotations[3]
    send(app, client, sample("webhook_ANNOTATIONS_DELETED"))
    assert memory(app).reference_ids() == set()


def test_update_of_an_annotation_deleted_meanwhile_removes_it(app, client, ls, dataset):
    image_id = dataset.positive_ids()[0]
    task = ls.add_task(image_id)
    ls.annotate(3, task, annotation_result(dataset, image_id))
    send(app, client, created_webhook(dataset, 3, image_id, []))
    del ls.annotations[3]
    send(app, client, created_webhook(dataset, 3, image_id, [], action="ANNOTATION_UPDATED"))
    assert memory(app).reference_ids() == set()


def test_start_training_resyncs_the_whole_project(app, client, ls, dataset):
    positives, negatives = dataset.positive_ids(), dataset.negative_ids()
    tasks = {i: ls.add_task(i) for i in positives[:3] + negatives[:1]}
    ls.annotate(1, tasks[positives[0]], annotation_result(dataset, positives[0], "brush"))
    ls.annotate(2, tasks[positives[1]], annotation_result(dataset, positives[1], "poly"))
    ls.annotate(3, tasks[positives[2]], annotation_result(dataset, positives[2]), cancelled=True)
    ls.annotate(4, tasks[negatives[0]], [])
    send(app, client, sample("webhook_START_TRAINING"))
    bank = memory(app)
    assert bank.reference_ids() == {"annotation:1", "annotation:2", "annotation:4"}
    assert bank.negative_images == {"annotation:4"}
    state = app.extensions["ntt"].runtime.store.snapshot(PROJECT).state
    assert state.synced_at is not None and state.label_config == LABEL_CONFIG

    # while the backend was away: one annotation deleted, one edited; unchanged ones are not recomputed
    del ls.annotations[1]
    ls.annotate(2, tasks[positives[1]], annotation_result(dataset, positives[1], "poly")[:1])
    added = client.get("/metrics").json["counters"]["references_added"]
    send(app, client, sample("webhook_START_TRAINING"))
    bank = memory(app)
    assert bank.reference_ids() == {"annotation:2", "annotation:4"}
    assert sum(bank.counts().values()) == 1
    assert client.get("/metrics").json["counters"]["references_added"] == added + 1


def test_setup_of_a_never_synced_project_syncs_it_once(app, client, ls, dataset):
    image_id = dataset.positive_ids()[0]
    ls.annotate(5, ls.add_task(image_id), annotation_result(dataset, image_id))
    body = {**sample("setup_from_LS"), "schema": LABEL_CONFIG}
    first = client.post("/setup", json=body).json["model_version"]
    assert app.extensions["ntt"].worker.wait_idle(60)
    assert memory(app).reference_ids() == {"annotation:5"}
    second = client.post("/setup", json=body).json["model_version"]
    assert second != first
    assert app.extensions["ntt"].worker.wait_idle(60)
    assert ls.calls.count(f"tasks of {PROJECT}") == 1


def test_a_failed_event_flags_the_project_for_a_resync(app, client, ls, dataset, monkeypatch):
    image_id = dataset.positive_ids()[0]
    task = ls.add_task(image_id)
    body = {**sample("setup_from_LS"), "schema": LABEL_CONFIG}
    client.post("/setup", json=body)
    assert app.extensions["ntt"].worker.wait_idle(60)
    assert app.extensions["ntt"].runtime.store.snapshot(PROJECT).state.synced_at is not None

    def down(annotation_id):
        raise LabelStudioAPIError("Label Studio is down")

    monkeypatch.setattr(ls, "get_annotation", down)
    ls.annotate(3, task, annotation_result(dataset, image_id))
    failed = client.post("/webhook", json=created_webhook(dataset, 3, image_id, []))
    assert failed.status_code == 500 and "Label Studio is down" in failed.json["error"]  # it says so
    assert app.extensions["ntt"].worker.wait_idle(60)
    assert memory(app).revision == 0
    monkeypatch.undo()
    client.post("/setup", json=body)  # Label Studio calls /setup before every predict batch
    assert app.extensions["ntt"].worker.wait_idle(60)
    assert memory(app).reference_ids() == {"annotation:3"}


def test_forged_events_about_future_ids_cannot_block_them(app, client, ls, dataset):
    image_id = dataset.positive_ids()[0]
    task = ls.add_task(image_id)
    forged_delete = sample("webhook_ANNOTATIONS_DELETED")
    forged_delete["annotations"] = [{"id": 41}]
    send(app, client, forged_delete)
    send(app, client, created_webhook(dataset, 42, image_id, []))
    assert app.extensions["ntt"].runtime.store.snapshot(PROJECT).state.deleted == []
    for annotation_id in (41, 42):  # now they really exist
        ls.annotate(annotation_id, task, annotation_result(dataset, image_id))
        send(app, client, created_webhook(dataset, annotation_id, image_id, []))
    assert memory(app).reference_ids() == {"annotation:41", "annotation:42"}


def test_a_parent_prediction_of_another_task_is_not_taken_as_the_correction(app, client, ls, dataset, caplog):
    """An annotation naming another task's prediction as its parent used to be diffed against that other image's
    masks: its "deleted" objects became negatives and observations. A parent is used only when it is of the same
    task."""
    from support.backend_helpers import predict, setup, task_for

    first, other, target = dataset.positive_ids()[:3]
    for annotation_id, image_id in ((1, first), (2, other)):
        ls.annotate(annotation_id, ls.add_task(image_id), annotation_result(dataset, image_id))
        send(app, client, {"action": "ANNOTATION_CREATED", "annotation": {"id": annotation_id},
                           "project": {"id": PROJECT}})
    version = setup(client)
    foreign = predict(client, [task_for(dataset, other)])[0]
    assert foreign["result"], "the memory predicts something on the other image"
    parent = ls.create_prediction(100 + other, foreign["result"], foreign["score"], version)["id"]
    target_task = ls.add_task(target)
    ls.annotate(3, target_task, annotation_result(dataset, target))["parent_prediction"] = parent
    with caplog.at_level("WARNING"):
        send(app, client, {"action": "ANNOTATION_CREATED", "annotation": {"id": 3}, "project": {"id": PROJECT}})
    entries = memory(app).entries("annotation:3")
    assert entries and not any(e.negative for e in entries)
    record = app.extensions["ntt"].runtime.store.snapshot(PROJECT).state.annotations["3"]
    assert record.source == "drawn"  # its observations are its own leave-one-out ones
    assert f"belongs to task {100 + other}" in caplog.text


def test_events_naming_too_many_ids_are_queued_as_one_resync(app, client, ls, dataset):
    """30 unauthenticated ANNOTATIONS_DELETED naming 101 unknown ids each used to queue 30 events, each becoming a
    full resync; now each is queued as a resync of its project, and the queue merges them into one."""
    worker = app.extensions["ntt"].worker
    worker.stop()  # nothing leaves the queue: what it holds is what was merged
    for n in range(30):
        event = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 10_000 * n + i} for i in range(101)],
                 "project": {"id": PROJECT}}
        response = client.post("/webhook", json=event)
        assert response.status_code == 200 and response.json["status"] == "queued", response.json
    assert worker.pending == 1
    assert app.extensions["ntt"].runtime.metrics.counters["events_coalesced"] == 30
    no_project = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 900_000 + i} for i in range(101)]}
    assert client.post("/webhook", json=no_project).json["status"] == "ignored"  # nothing to resync
    assert worker.pending == 1
