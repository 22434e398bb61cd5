"""The protocol through Flask's test client, payload mode (no API key), with the real Label Studio 1.23.2 samples
pointed at synthetic images served from a tmp LOCAL_FILES_DOCUMENT_ROOT."""
import copy

import pytest

from labelstudio_backend.store.versions import revision_of
from ntt_engine import MemoryBank

from support.backend_helpers import (LABEL_CONFIG, PROJECT, annotation_result, created_webhook, learn, predict, region_for,
                             sample, send, setup, snap, task_for)


# ------------------------------------------------------------------------------------------------ health / setup
def test_health_is_json_and_needs_no_auth(make_app):
    client = make_app(basic_auth_user="u", basic_auth_pass="p").test_client()
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json["status"] == "UP" and response.json["model_class"] == "NoTimeToTrain"


def test_setup_sample(client, app):
    body = sample("setup_from_LS")  # its schema was truncated when recorded: nothing usable, nothing stored yet
    response = client.post("/setup", json=body)
    assert response.status_code == 400 and "label config" in response.json["error"]
    version = setup(client)
    assert version.startswith("synthetic-") and revision_of(version) == 0
    assert snap(app).state.label_config == LABEL_CONFIG
    assert client.post("/setup", json=body).json["model_version"] == version  # the stored config serves now


@pytest.mark.parametrize("body,message", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "object"),
    (b"", "JSON object body"),
    (b'{"schema": "<View/>"}', "needs 'project'"),
    (b'{"project": "abc.1", "schema": "<View/>"}', "needs 'project'"),
    (b'{"project": "4.1", "schema": "<View><Image name=\\"i\\" value=\\"$i\\"/><Choices name=\\"c\\" '
     b'toName=\\"i\\"><Choice value=\\"a\\"/></Choices></View>"}', "no BrushLabels"),
    (b'{"project": "4.1", "extra_params": "{oops"}', "extra_params"),
    (b'{"project": "4.1", "extra_params": {"score_threshold": 3}}', "score_threshold"),
])
def test_setup_errors_are_clear_400s(client, body, message):
    response = client.post("/setup", data=body, content_type="application/json")
    assert response.status_code == 400
    assert message in response.json["error"]


def test_score_threshold_from_extra_params_changes_version_and_filters(app, client, dataset):
    learn(app, client, dataset)
    version = setup(client)
    tasks = [task_for(dataset, i) for i in dataset.positive_ids()[4:7]]
    loose = sum(len(r["result"]) for r in predict(client, tasks))
    strict_version = setup(client, extra_params='{"score_threshold": 0.999}')
    assert strict_version != version and snap(app).state.score_threshold == 0.999
    strict = predict(client, tasks)
    assert sum(len(r["result"]) for r in strict) < loose
    assert all(region["score"] > 0.999 for r in strict for region in r["result"])
    assert setup(client, extra_params='{"score_threshold": 0.999}') == strict_version  # unchanged: same version
    # the version names the thresholds: it moved without a memory change, and comes back with them
    assert revision_of(strict_version) == revision_of(version) == snap(app).memory.revision
    assert setup(client, extra_params=None) == version  # back to NTT_SCORE_THRESHOLD


def test_model_version_follows_the_environment_threshold_across_a_restart(make_app, dataset):
    app = make_app()
    client = app.test_client()
    learn(app, client, dataset, kinds=("brush",))
    version = setup(client)
    app.extensions["ntt"].worker.stop()
    restarted = make_app(score_threshold=0.8)  # same MODEL_DIR and memory, another NTT_SCORE_THRESHOLD
    changed = setup(restarted.test_client())
    assert changed != version and revision_of(changed) == revision_of(version)
    task = task_for(dataset, dataset.positive_ids()[5])
    assert predict(restarted.test_client(), [task])[0]["model_version"] == changed


# ------------------------------------------------------------------------------------------------ webhooks
def test_created_adds_references_and_changes_model_version(app, client, dataset):
    before = setup(client)
    image_id = dataset.positive_ids()[0]
    send(app, client, created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id, "brush")))
    current = snap(app)
    labels = [label for label, _ in dataset.instances(image_id)]
    assert current.memory.reference_ids() == {"annotation:3"}
    assert sum(current.memory.counts().values()) == len(labels)
    assert current.state.annotations["3"].kind == "reference"
    after = setup(client)
    assert after != before and revision_of(after) == current.memory.revision
    model_dir = app.extensions["ntt"].runtime.settings.model_dir  # rows of the state database, not files
    assert (model_dir / "state.sqlite3").exists() and not (model_dir / str(PROJECT) / "state.json").exists()


def test_sample_payload_with_its_recorded_config_falls_back_to_the_stored_config(app, client, dataset):
    setup(client)
    image_id = dataset.positive_ids()[0]
    truncated = sample("webhook_ANNOTATION_CREATED")["project"]["label_config"]
    send(app, client, created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id, "poly"),
                                      label_config=truncated))
    assert "annotation:3" in snap(app).memory


def test_polygon_and_rectangle_annotations_become_references(app, client, dataset):
    first, second = dataset.positive_ids()[:2]
    send(app, client, created_webhook(dataset, 1, first, annotation_result(dataset, first, "poly")))
    send(app, client, created_webhook(dataset, 2, second, annotation_result(dataset, second, "rect")))
    counts = snap(app).state.annotations
    assert counts["1"].regions == len(dataset.instances(first))
    assert counts["2"].regions == len(dataset.instances(second))  # SAM found an object in every box


def test_updated_replaces_the_annotations_references(app, client, dataset):
    image_id = dataset.positive_ids()[0]
    result = annotation_result(dataset, image_id, "brush")
    send(app, client, created_webhook(dataset, 3, image_id, result))
    revision = snap(app).memory.revision
    send(app, client, created_webhook(dataset, 3, image_id, result[:1], action="ANNOTATION_UPDATED"))
    current = snap(app)
    assert current.memory.revision > revision
    assert current.memory.reference_ids() == {"annotation:3"}
    assert sum(current.memory.counts().values()) == 1 and current.state.annotations["3"].regions == 1


def test_deleted_removes_references_and_changes_version(app, client, dataset):
    first, second = dataset.positive_ids()[:2]
    send(app, client, created_webhook(dataset, 3, first, annotation_result(dataset, first)))
    send(app, client, created_webhook(dataset, 5, second, annotation_result(dataset, second)))
    version = setup(client)
    send(app, client, sample("webhook_ANNOTATIONS_DELETED"))  # the real payload: {"annotations": [{"id": 3}]}
    current = snap(app)
    assert current.memory.reference_ids() == {"annotation:5"}
    assert "3" not in current.state.annotations
    assert setup(client) != version
    revision = current.memory.revision
    send(app, client, sample("webhook_ANNOTATIONS_DELETED"))  # deleting again: nothing to do
    assert snap(app).memory.revision == revision


def test_empty_annotation_marks_a_negative_image(app, client, dataset):
    negative = dataset.negative_ids()[0]
    send(app, client, created_webhook(dataset, 8, negative, []))
    current = snap(app)
    assert current.memory.negative_images == {"annotation:8"}
    assert current.state.annotations["8"].kind == "negative"
    assert len(current.memory) == 0


def test_cancelled_annotation_changes_nothing(app, client, dataset):
    first, second = dataset.positive_ids()[:2]
    send(app, client, created_webhook(dataset, 3, first, annotation_result(dataset, first)))
    revision = snap(app).memory.revision
    send(app, client, created_webhook(dataset, 4, second, annotation_result(dataset, second), cancelled=True))
    assert snap(app).memory.revision == revision and "4" not in snap(app).state.annotations
    # documented choice: a submitted annotation later updated as cancelled withdraws what it contributed
    send(app, client, created_webhook(dataset, 3, first, [], action="ANNOTATION_UPDATED", cancelled=True))
    assert snap(app).memory.reference_ids() == set()


def test_unknown_labels_are_ignored(app, client, dataset):
    image_id = dataset.positive_ids()[0]
    (label, mask), *_ = dataset.instances(image_id)
    result = region_for("brush", "unicorn", mask)
    send(app, client, created_webhook(dataset, 3, image_id, result))
    current = snap(app)
    assert len(current.memory) == 0 and current.state.annotations["3"].kind == "none"
    send(app, client, created_webhook(dataset, 3, image_id, result + region_for("poly", label, mask),
                                      action="ANNOTATION_UPDATED"))
    assert snap(app).memory.counts() == {label: 1}


def test_bulk_annotations_created(app, client, dataset):
    first, second = dataset.positive_ids()[:2]
    one = created_webhook(dataset, 3, first, annotation_result(dataset, first))
    two = created_webhook(dataset, 4, second, annotation_result(dataset, second))
    payload = copy.deepcopy(one)
    payload.update(action="ANNOTATIONS_CREATED", annotation=[one["annotation"], two["annotation"]],
                   task=[one["task"], two["task"]])
    send(app, client, payload)
    assert snap(app).memory.reference_ids() == {"annotation:3", "annotation:4"}


def test_start_training_and_other_actions_are_acknowledged(app, client, dataset):
    image_id = dataset.positive_ids()[0]
    send(app, client, created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id)))
    revision = snap(app).memory.revision
    response = client.post("/webhook", json=sample("webhook_START_TRAINING"))
    assert response.status_code == 200 and response.json["status"] == "queued"
    for action in ("TASKS_CREATED", "PROJECT_UPDATED", "LABEL_LINK_CREATED"):
        response = client.post("/webhook", json={"action": action, "project": {"id": PROJECT}})
        assert response.status_code == 200 and response.json["status"] == "ignored"
    assert app.extensions["ntt"].worker.wait_idle()
    assert snap(app).memory.revision == revision  # no API key: a resync has nothing to read from
    for bad in (b"nope", b"{}", b'{"action": "ANNOTATION_CREATED", "project": {"id": 4}}'):
        assert client.post("/webhook", data=bad, content_type="application/json").status_code == 400


def test_path_traversal_in_a_webhook_task_is_refused(app, client, dataset):
    image_id = dataset.positive_ids()[0]
    payload = created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id))
    payload["task"]["data"]["image"] = "/data/local-files/?d=../../etc/passwd"
    send(app, client, payload)
    assert snap(app).memory.revision == 0 and not snap(app).state.annotations


# ------------------------------------------------------------------------------------------------ auth
ROUTES = [("post", "/setup"), ("post", "/predict"), ("post", "/webhook"), ("get", "/versions"), ("get", "/metrics")]


def test_basic_auth_guards_every_route_but_health(make_app):
    client = make_app(basic_auth_user="ml", basic_auth_pass="secret").test_client()
    for method, route in ROUTES:
        assert getattr(client, method)(route, json={}).status_code == 401, route
        wrong = getattr(client, method)(route, json={}, auth=("ml", "nope"))
        assert wrong.status_code == 401 and "WWW-Authenticate" in wrong.headers
        assert getattr(client, method)(route, json={}, auth=("ml", "secret")).status_code != 401, route
    assert client.get("/health").status_code == 200


def test_webhook_needs_no_credentials_when_payloads_are_not_trusted(make_app):
    client = make_app(basic_auth_user="ml", basic_auth_pass="secret", label_studio_url="http://127.0.0.1:9",
                      label_studio_api_key="token").test_client()
    response = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 4}})
    assert response.status_code == 200
    assert client.post("/setup", json={}).status_code == 401


# ------------------------------------------------------------------------------------------------ misc
def test_versions_and_metrics(app, client, dataset):
    learn(app, client, dataset, kinds=("brush",))
    version = setup(client)
    response = client.get("/versions", json={"project": "4.1795614847"})
    assert response.json == {"versions": [version]}
    assert client.get("/versions?project=4").json == {"versions": [version]}
    metrics = client.get("/metrics").json
    (project,) = metrics["projects"]
    assert project["project"] == PROJECT and project["model_version"] == version
    assert sum(project["references"].values()) == len(dataset.instances(dataset.positive_ids()[0]))
    assert metrics["queue_length"] == 0 and metrics["counters"]["events_applied"] == 1
    text = client.get("/metrics?format=prometheus").data.decode()
    assert 'ntt_memory_revision{project="4"}' in text and "ntt_queue_length 0.0" in text


def test_prometheus_text_is_prometheus_clients_and_follows_each_change(app, client, dataset):
    """Each project's sample lines are cached per version of the project: the scrape must still be exactly what
    prometheus-client renders of the whole scrape, and move with the next change."""
    from prometheus_client.parser import text_string_to_metric_families

    from labelstudio_backend.metrics import _project_families, _render

    def revision(text: str) -> float:
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "ntt_memory_revision"]
        (sample,) = family.samples
        return sample.value

    first, second = dataset.positive_ids()[:2]
    send(app, client, created_webhook(dataset, 3, first, annotation_result(dataset, first)))
    text = client.get("/metrics?format=prometheus").data.decode()
    assert revision(text) == 1.0
    send(app, client, created_webhook(dataset, 4, second, annotation_result(dataset, second)))
    assert revision(client.get("/metrics?format=prometheus").data.decode()) == 2.0
    metrics, gauges = app.extensions["ntt"].runtime.metrics, client.get("/metrics").json
    whole = _render([*metrics._process_families(gauges), *_project_families(gauges["projects"])])
    ours = metrics.prometheus(gauges)
    assert ours == whole and 'ntt_references{label=' in ours


def test_processes_sharing_model_dir_see_each_others_changes(make_app, dataset):
    app_a, app_b = make_app(), make_app()
    client_a, client_b = app_a.test_client(), app_b.test_client()
    image_id = dataset.positive_ids()[0]
    setup(client_b)
    tasks = [task_for(dataset, dataset.positive_ids()[2])]
    assert predict(client_b, tasks)[0]["result"] == []
    send(app_a, client_a, created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id)))
    version = setup(client_a)
    assert setup(client_b) == version
    prediction = predict(client_b, tasks)[0]
    assert prediction["model_version"] == version and prediction["result"]
    send(app_b, client_b, sample("webhook_ANNOTATIONS_DELETED"))
    assert snap(app_a).memory.reference_ids() == set()


def test_memory_of_another_encoder_is_set_aside(make_app, dataset):
    """The file store (NTT_STATE_URL=files); the database store's case is in tests/store."""
    app = make_app(state_url="files")
    client = app.test_client()
    store = app.extensions["ntt"].runtime.store
    with store.edit(PROJECT) as current:
        current.state.label_config = LABEL_CONFIG
    foreign = MemoryBank("some-other-encoder")
    foreign.revision = 7
    foreign.save(store.project_dir(PROJECT) / "memory.ntt")
    state = store.project_dir(PROJECT) / "state.json"
    state.write_text(state.read_text().replace('"revision": 0', '"revision": 7'))
    version = setup(client)
    assert revision_of(version) == 8  # served empty at once, but a read writes nothing: the next write sets it aside
    assert not list(store.project_dir(PROJECT).glob("memory.ntt.incompatible-*"))
    with store.edit(PROJECT):
        pass
    assert list(store.project_dir(PROJECT).glob("memory.ntt.incompatible-*"))
    assert setup(client) == version


def test_late_and_stale_events_do_not_revive_or_roll_back(app, client, dataset):
    """Several gunicorn workers may apply one annotation's events out of order."""
    image_id = dataset.positive_ids()[0]
    result = annotation_result(dataset, image_id)
    newer = created_webhook(dataset, 3, image_id, result[:1], action="ANNOTATION_UPDATED")
    newer["annotation"]["updated_at"] = "2026-11-25T14:00:00.5Z"
    send(app, client, newer)
    older = created_webhook(dataset, 3, image_id, result)
    older["annotation"]["updated_at"] = "2026-11-25T13:59:59Z"
    send(app, client, older)
    assert sum(snap(app).memory.counts().values()) == 1  # the older (created) event came last: ignored
    send(app, client, sample("webhook_ANNOTATIONS_DELETED"))
    send(app, client, newer)  # a late event about a deleted annotation
    assert snap(app).memory.reference_ids() == set() and snap(app).state.deleted == [3]


@pytest.mark.parametrize("state_url", ["", "files"])
def test_metrics_and_versions_follow_another_process_without_reloading_unchanged_projects(make_app, dataset,
                                                                                           state_url):
    """/metrics and /versions keep each project's figures until the project changes (its stamp moves), by any
    process: a change made through another process shows at once, and an unchanged project is not read again."""
    app_a, app_b = make_app(state_url=state_url), make_app(state_url=state_url)
    client_a, client_b = app_a.test_client(), app_b.test_client()
    app_b.extensions["ntt"].runtime.engine()  # loaded (not preloaded here): /metrics reports projects fully
    image_id = dataset.positive_ids()[0]
    send(app_a, client_a, created_webhook(dataset, 3, image_id, annotation_result(dataset, image_id)))
    send(app_a, client_a, created_webhook(dataset, 4, image_id, annotation_result(dataset, image_id), project=9))

    def revisions():
        gauges = client_b.get("/metrics").json["projects"]
        return {g["project"]: g["revision"] for g in gauges}

    assert revisions() == {PROJECT: 1, 9: 1}
    def versions(client):
        return {p: client.get(f"/versions?project={p}").json["versions"][0] for p in (str(PROJECT), "9")}

    assert client_b.get("/versions").json["projects"] == versions(client_a)
    before = versions(client_a)
    store_b, reads = app_b.extensions["ntt"].runtime.store, []
    original = store_b.snapshot
    store_b.snapshot = lambda project: reads.append(project) or original(project)
    second = dataset.positive_ids()[1]
    send(app_a, client_a, created_webhook(dataset, 5, second, annotation_result(dataset, second)))
    assert revisions() == {PROJECT: 2, 9: 1}
    assert reads == [PROJECT]  # project 9 did not change: not read again
    reads.clear()
    assert client_b.get("/versions").json["projects"] == versions(client_a) != before
    assert reads == [PROJECT]  # and /versions read only the project that changed


def test_metrics_and_dashboard_show_references_held_back_by_the_memory_length(make_app, dataset):
    from ntt_engine import Engine, EngineConfig

    capped = Engine(EngineConfig.preset("synthetic", max_references_per_class=1, keep_references="latest"))
    app = make_app(runtime_hook=lambda rt: setattr(rt, "_engine_factory", lambda: capped))
    client = app.test_client()
    first, second = dataset.positive_ids()[:2]
    send(app, client, created_webhook(dataset, 3, first, annotation_result(dataset, first)))
    send(app, client, created_webhook(dataset, 5, second, annotation_result(dataset, second)))
    (project,) = client.get("/metrics").json["projects"]
    held = project["references_held_back"]
    assert held == {label: count - 1 for label, count in project["references"].items()} and sum(held.values()) > 0
    text = client.get("/metrics?format=prometheus").data.decode()
    assert f'ntt_references_held_back{{label="{next(iter(held))}",project="4"}}' in text
    rows = client.get(f"/dashboard/{PROJECT}.json").json["classes"]
    assert {row["label"]: row["held_back"] for row in rows if row["references"]} == held
    assert snap(app).memory.positive_examples().refs == ("annotation:5",) * len(held)  # the latest, per class
