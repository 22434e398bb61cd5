"""Issue 10 freshness: bounded waits for pending events, the background refresh of the next tasks' predictions
(on the in-memory fake Label Studio), the task-level score, /train and /versions."""
from __future__ import annotations

import threading
import time

import numpy as np

from labelstudio_backend.store.versions import revision_of
from labelstudio_backend.labelstudio.client import LabelStudioAPIError
from labelstudio_backend.store.in_flight import ProjectActivity
from labelstudio_backend.predict.task_score import Thresholds, shown, task_certainty
from ntt_engine import Instance

from support.backend_helpers import annotation_result, created_webhook, learn, send, setup, snap
from support.fake_ls import FakeLabelStudio

PROJECT = 4


def _instance(label: str, score: float) -> Instance:
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    return Instance(label, score, mask, (1.0, 1.0, 2.0, 2.0), 1.0)


def test_task_certainty_is_low_near_a_threshold_and_without_coverage():
    thresholds = Thresholds(0.5, {"b": 0.8})
    assert task_certainty([], thresholds) == 0.0  # nothing the memory recognises: label it next
    assert task_certainty([("a", 0.1)], thresholds) == 0.8  # far below its threshold: fairly sure it is no "a"
    assert task_certainty([("a", 0.95), ("b", 0.99)], thresholds) == 0.9  # the least certain object decides
    borderline = task_certainty([("a", 0.95), ("b", 0.79)], thresholds)  # b just below its 0.8
    assert 0.0 < borderline < 0.02
    assert task_certainty([("a", 1.0), ("b", 0.0)], thresholds) == 1.0
    assert task_certainty([("a", 0.5)], thresholds) == 0.0  # on the threshold: a coin toss
    # continuous: a task's score orders it among others (the old band gave 0 or 1 on the demo's images)
    ranked = [task_certainty([("a", s)], thresholds) for s in (0.55, 0.7, 0.9, 0.99)]
    assert ranked == sorted(ranked) and len(set(ranked)) == 4
    assert [i.label for i in shown([_instance("a", 0.6), _instance("b", 0.6)], thresholds)] == ["a"]
    assert thresholds.floor == 0.5


def test_activity_waits_until_the_projects_events_are_applied():
    activity = ProjectActivity()
    activity.hold(4)
    started = time.monotonic()
    assert activity.wait_project(4, 0.2) is False and time.monotonic() - started >= 0.2
    assert activity.wait_project(5, 0.0) is True  # another project has nothing pending
    threading.Timer(0.1, activity.release, args=(4,)).start()
    assert activity.wait_project(4, 5.0) is True
    assert activity.pending(4) == 0


def test_webhook_answers_once_its_event_is_applied(app, client, dataset):
    image_id = dataset.positive_ids()[0]
    response = client.post("/webhook", json=created_webhook(dataset, 10, image_id,
                                                            annotation_result(dataset, image_id)))
    assert response.json["status"] == "applied"  # Label Studio serves the next task only after this answer
    assert snap(app).memory.revision == 1


def test_setup_waits_for_pending_events_and_reports_the_new_version(app, client, dataset):
    setup(client)
    worker = app.extensions["ntt"].worker
    worker.activity.hold(PROJECT)  # an event accepted but not applied yet
    threading.Timer(0.3, worker.activity.release, args=(PROJECT,)).start()
    started = time.monotonic()
    setup(client)
    assert time.monotonic() - started >= 0.25
    assert client.get("/metrics").json["counters"]["fresh_waits_setup"] == 1


def _api_app(make_app, ls, **overrides):
    def use_fake(runtime):
        runtime.api = ls

    return make_app(runtime_hook=use_fake, label_studio_url="http://ls.test:8080", label_studio_api_key="legacy-token",
                    **overrides)


def _refresh_project(make_app, dataset, refresh_tasks: int, images: int):
    """The fake Label Studio with `images` tasks, and a connected API-mode app refreshing `refresh_tasks` of them."""
    ls = FakeLabelStudio(dataset)
    app = _api_app(make_app, ls, refresh_tasks=refresh_tasks)
    client = app.test_client()
    for image_id in range(1, images + 1):
        ls.add_task(image_id)
    setup(client)
    return ls, app, client


def _annotate(ls, app, client, dataset, annotation_id: int, image_id: int) -> None:
    """An annotation of `image_id`'s ground truth in Label Studio, and its webhook."""
    ls.annotate(annotation_id, 100 + image_id, annotation_result(dataset, image_id))
    send(app, client, {"action": "ANNOTATION_CREATED", "annotation": {"id": annotation_id}, "project": {"id": PROJECT}})


def test_refresh_replaces_own_stale_predictions_in_place_and_keeps_other_models(make_app, dataset):
    ls, app, client = _refresh_project(make_app, dataset, refresh_tasks=3, images=6)
    refresher = app.extensions["ntt"].refresher
    ids = dataset.positive_ids()
    _annotate(ls, app, client, dataset, 10, ids[0])
    assert refresher.wait_idle(30)
    unlabelled = [t for t in sorted(ls.tasks) if t != 100 + ids[0]][:3]
    first = {t: [p for p in ls.tasks[t]["predictions"]] for t in unlabelled}
    assert all(len(p) == 1 for p in first.values()), first
    version = first[unlabelled[0]][0]["model_version"]
    assert revision_of(version) == 1
    ls.create_prediction(unlabelled[0], [], 0.3, "someone-else-v1")  # another model's prediction
    stale_duplicate = ls.create_prediction(unlabelled[1], [], 0.1, version)  # an older own duplicate
    # a memory change: everything of ours on the next tasks moves to .r2, in place
    _annotate(ls, app, client, dataset, 11, ids[1])
    assert refresher.wait_idle(30)
    head = [t for t in sorted(ls.tasks) if t not in (100 + ids[0], 100 + ids[1])][:3]
    for task in head:
        own = [p for p in ls.tasks[task]["predictions"] if p["model_version"] != "someone-else-v1"
               and not p["model_version"].endswith(".archived")]
        assert [revision_of(p["model_version"]) for p in own] == [2], (task, own)
        assert 0.0 <= own[0]["score"] <= 1.0
    kept = {p["id"] for t in unlabelled for p in first[t]} & {p["id"] for t in head for p in ls.tasks[t]["predictions"]}
    assert kept, "own predictions are updated in place (same id), not re-created"
    assert [p["model_version"] for p in ls.tasks[unlabelled[0]]["predictions"]].count("someone-else-v1") == 1
    # two own predictions on one task: the newest is replaced in place, the older one archived (not deleted: an
    # editor may hold it open, and its submit names it as parent_prediction)
    older_id = first[unlabelled[1]][0]["id"]
    (archived, updated), = [ls.tasks[unlabelled[1]]["predictions"]]
    assert (archived["id"], archived["model_version"]) == (older_id, version.split(".r")[0] + ".archived")
    assert updated["id"] == stale_duplicate["id"] and revision_of(updated["model_version"]) == 2
    assert not [c for c in ls.calls if c.startswith("delete prediction")]
    assert [c for c in ls.calls if c.startswith(f"relabel prediction {older_id} ")]
    counters = client.get("/metrics").json["counters"]
    assert counters["refresh_passes"] >= 2 and counters["refresh_predictions_updated"] >= 2


def test_train_resyncs_in_api_mode_and_applies_the_body_without_a_key(make_app, dataset):
    ls = FakeLabelStudio(dataset)
    app = _api_app(make_app, ls, refresh_tasks=0)
    client = app.test_client()
    response = client.post("/train", json={"project": "4.1795614847", "annotations": [], "label_config": "<View/>"})
    assert response.status_code == 200 and response.json["status"] == "resync queued"
    # what it did, in words and numbers (Label Studio's button shows none of it, its log and API callers do)
    assert response.json["annotations_learnt"] == 0 and response.json["job"].startswith("ntt-resync-4-")
    assert "resync of project 4" in response.json["message"]
    assert app.extensions["ntt"].worker.wait_idle(30)
    assert client.get("/metrics").json["counters"]["resyncs"] == 1
    assert client.post("/train", json={"annotations": []}).status_code == 400  # no project

    payload_app = make_app(model_dir=app.extensions["ntt"].runtime.settings.model_dir.parent / "payload")
    payload_client = payload_app.test_client()
    setup(payload_client)
    image_id = dataset.positive_ids()[0]
    task = {"id": 100 + image_id, "data": {"image": dataset.url(image_id)},
            "annotations": [{"id": 10, "result": annotation_result(dataset, image_id), "was_cancelled": False,
                             "updated_at": "2026-11-25T13:00:00Z"}]}
    response = payload_client.post("/train", json={"project": "4.1795614847", "annotations": [task]})
    assert response.json["status"] == "annotations queued" and response.json["queued_annotations"] == 1
    assert payload_app.extensions["ntt"].worker.wait_idle(30)
    assert sum(snap(payload_app).memory.counts().values()) == len(dataset.instances(image_id))


def test_versions_without_a_project_lists_every_projects_current_version(app, client, dataset):
    learn(app, client, dataset, kinds=("brush",))
    version = setup(client)
    body = client.get("/versions").json  # Label Studio's GET carries no body and no query
    assert body["versions"] == [version] and body["projects"] == {"4": version}
    assert version.startswith(body["engine"] + ".r")
    assert client.get("/versions?project=4").json["versions"] == [version]


def test_predicts_in_flight_are_seen_across_processes_through_marker_files(tmp_path, monkeypatch):
    from labelstudio_backend.store.in_flight import PredictsInFlight

    predicts, other_process = PredictsInFlight(lambda p: tmp_path / str(p)), PredictsInFlight(lambda p: tmp_path / str(p))
    with predicts.hold(4):  # no project directory yet: nothing is created
        assert not (tmp_path / "4").exists() and not other_process.busy(4)
    (tmp_path / "4").mkdir()
    assert not other_process.busy(4)
    with predicts.hold(4):
        assert other_process.busy(4) and not other_process.busy(5)
    assert other_process.busy(4)  # Label Studio stores the answer's predictions right after it
    monkeypatch.setattr(PredictsInFlight, "SETTLE_S", 0.0)
    assert not other_process.busy(4)
    # a /setup: Label Studio picks the tasks to predict right after it, so the refresh holds off as after a /predict
    monkeypatch.setattr(PredictsInFlight, "SETTLE_S", 3.0)
    (tmp_path / "4" / ".predicted").unlink()
    assert not other_process.busy(4)
    predicts.expect(4)
    assert other_process.busy(4)
    predicts.expect(6)  # no project directory: nothing is created
    assert not (tmp_path / "6").exists()


def test_refresh_writes_nothing_computed_while_a_predict_began(make_app, dataset, monkeypatch):
    """Label Studio stores a /predict's answer itself once it returns: a refreshed prediction written for the same
    task meanwhile would be a second current one (seen with gunicorn: 9 current predictions on 8 tasks)."""
    from labelstudio_backend.store.in_flight import PredictsInFlight

    monkeypatch.setattr(PredictsInFlight, "SETTLE_S", 0.2)
    ls, app, client = _refresh_project(make_app, dataset, refresh_tasks=2, images=4)
    backend = app.extensions["ntt"]
    compute = backend.refresher.predictor.predict_task
    label_studio_predicts = []

    def label_studio_predict(task_id: int, version: str) -> None:  # another worker answers LS's /predict
        with backend.predicts.hold(PROJECT):
            time.sleep(0.3)
        ls.create_prediction(task_id, [], 0.5, version)  # and Label Studio stores the answer

    def predict_while_label_studio_predicts(engine, snap, config, task, thresholds, version, **kwargs):
        if not label_studio_predicts:  # the first refreshed task: Label Studio's /predict starts meanwhile
            label_studio_predicts.append(threading.Thread(target=label_studio_predict, args=(task["id"], version)))
            label_studio_predicts[0].start()
            time.sleep(0.05)
        return compute(engine, snap, config, task, thresholds, version, **kwargs)

    monkeypatch.setattr(backend.refresher.predictor, "predict_task", predict_while_label_studio_predicts)
    ids = dataset.positive_ids()
    _annotate(ls, app, client, dataset, 10, ids[0])
    assert backend.refresher.wait_idle(30)
    label_studio_predicts[0].join()
    head = [t for t in sorted(ls.tasks) if t != 100 + ids[0]][:2]
    current = {t: [p["model_version"] for p in ls.tasks[t]["predictions"]] for t in head}
    assert all(len(versions) == 1 for versions in current.values()), current
    # and never for a moment two: the refresh wrote nothing for the task Label Studio was predicting
    assert len(ls.predictions) == len(head) and not [c for c in ls.calls if c.startswith("delete prediction")]


def test_one_odd_task_in_a_listing_never_costs_the_others_their_refresh(make_app, dataset, monkeypatch):
    """A listed task without an id, one whose "predictions" is a number, and one whose update Label Studio answers
    with an HTML page used to end the whole pass at the first of them; now each is skipped and counted as failed."""
    ls, app, client = _refresh_project(make_app, dataset, refresh_tasks=6, images=4)
    refresher = app.extensions["ntt"].refresher
    listing = ls.unlabelled_tasks

    def odd_listing(project_id, limit):
        tasks = listing(project_id, limit)
        return [{"data": {"image": "no id"}}, "not a task", {**tasks[0], "predictions": 5}] + tasks[1:]

    monkeypatch.setattr(ls, "unlabelled_tasks", odd_listing)
    ids = dataset.positive_ids()
    _annotate(ls, app, client, dataset, 10, ids[0])
    assert refresher.wait_idle(30)
    unlabelled = [t for t in sorted(ls.tasks) if t != 100 + ids[0]]
    assert all(len(ls.tasks[t]["predictions"]) == 1 for t in unlabelled), \
        {t: ls.tasks[t]["predictions"] for t in unlabelled}
    version = ls.tasks[unlabelled[0]]["predictions"][0]["model_version"]

    attempts = []

    def html_update(prediction_id, result, score, model_version):
        attempts.append(prediction_id)
        raise LabelStudioAPIError("PATCH /api/predictions/1/: Label Studio's answer is not JSON", 200)

    monkeypatch.setattr(ls, "update_prediction", html_update)
    _annotate(ls, app, client, dataset, 11, ids[1])
    assert refresher.wait_idle(30)
    left = [t for t in unlabelled if t != 100 + ids[1]]
    assert len(set(attempts)) == len(left), "each task's failed update is its own: the pass went on to the next"
    assert all([p["model_version"] for p in ls.tasks[t]["predictions"]] == [version] for t in left)


def test_predict_archives_the_tasks_superseded_own_predictions_before_answering(make_app, dataset):
    """Label Studio stores /predict's answer beside a task's older predictions: the backend archives its own older
    ones first (relabelled, never deleted: an open editor's submit names them), so an unannotated task never holds
    two live ones; annotated tasks, other models' predictions and ids the request body claims but Label Studio does
    not list are left alone."""
    from support.backend_helpers import predict
    ls, app, client = _refresh_project(make_app, dataset, refresh_tasks=0, images=6)
    ids = dataset.positive_ids()
    _annotate(ls, app, client, dataset, 10, ids[0])
    version = setup(client)
    engine_id = version.split(".r")[0]
    older = f"{engine_id}.r0-000000"
    free, annotated, forged = (100 + i for i in ids[1:4])
    mine = ls.create_prediction(free, [], 0.2, older)
    theirs = ls.create_prediction(free, [], 0.3, "someone-else-v1")
    parent = ls.create_prediction(annotated, [], 0.2, older)
    ls.annotate(11, annotated, [])
    victim = ls.create_prediction(100 + ids[4], [], 0.2, older)  # on another task: a forged body names it
    tasks = [{**ls.get_task(free), "project": PROJECT}, {**ls.get_task(annotated), "project": PROJECT},
             {**ls.get_task(forged), "project": PROJECT, "predictions": [dict(victim, task=forged)]}]
    results = predict(client, tasks)
    assert [r["model_version"] for r in results] == [version] * 3
    versions = {p["id"]: p["model_version"] for p in ls.predictions}
    assert versions[mine["id"]] == f"{engine_id}.archived"  # superseded, on an unannotated task: archived first
    assert (versions[theirs["id"]], versions[parent["id"]], versions[victim["id"]]) == ("someone-else-v1", older, older)
    assert not [c for c in ls.calls if c.startswith("delete prediction")]
    assert client.get("/metrics").json["counters"]["predictions_superseded_archived"] == 1


def test_predict_archives_a_same_version_prediction_a_refresh_stored_meanwhile(make_app, dataset):
    """Two gunicorn workers: one's refresh stores the current version's prediction on a task after Label Studio
    read the task for a /predict that the other worker answers with the same version. Label Studio would then hold
    two of one version (seen in the 8-annotator test): /predict reads the task's predictions from the API and
    archives the one its answer replaces."""
    from support.backend_helpers import predict
    ls, app, client = _refresh_project(make_app, dataset, refresh_tasks=0, images=6)
    ids = dataset.positive_ids()
    _annotate(ls, app, client, dataset, 10, ids[0])
    version = setup(client)
    task = 100 + ids[1]
    body = {**ls.get_task(task), "project": PROJECT}  # what Label Studio sent: no prediction yet
    refreshed = ls.create_prediction(task, [{"type": "brushlabels"}], 0.9, version)  # the other worker's refresh
    results = predict(client, [body])
    assert results[0]["model_version"] == version and results[0]["result"]
    assert {p["id"]: p["model_version"] for p in ls.predictions}[refreshed["id"]].endswith(".archived")
    assert client.get("/metrics").json["counters"]["predictions_superseded_archived"] == 1


def test_superseded_own_predictions_move_to_one_archive_version(make_app, dataset):
    """Label Studio lists every distinct model_version: the prediction an annotation started from, and any other of
    this backend's superseded predictions once more than two superseded versions are listed, are relabelled to
    `<engine id>.archived` in place (same id, same result, the annotation's parent_prediction intact)."""
    ls, app, client = _refresh_project(make_app, dataset, refresh_tasks=2, images=10)
    refresher = app.extensions["ntt"].refresher
    ids = dataset.positive_ids()
    _annotate(ls, app, client, dataset, 10, ids[0])
    assert refresher.wait_idle(30)
    engine_id = setup(client).split(".r")[0]
    archive = f"{engine_id}.archived"
    served = next(t for t in sorted(ls.tasks) if ls.tasks[t]["predictions"])
    parent = ls.tasks[served]["predictions"][0]
    image_id = served - 100
    ls.annotate(11, served, annotation_result(dataset, image_id))["parent_prediction"] = parent["id"]
    send(app, client, {"action": "ANNOTATION_CREATED", "annotation": {"id": 11}, "project": {"id": PROJECT}})
    assert refresher.wait_idle(30)
    current = setup(client)
    after = ls.get_prediction(parent["id"])
    assert after["model_version"] == archive and after["result"] == parent["result"]  # relabelled in place
    assert ls.annotations[11]["parent_prediction"] == parent["id"]
    assert snap(app).state.annotations["11"].source == f"correction {parent['id']}"
    assert {v for v in ls.model_versions(PROJECT) if v.startswith(engine_id)} == {current, archive}

    # a bulk pre-label of other tasks at three older versions: swept on the next pass
    beyond = [t for t in sorted(ls.tasks) if not ls.tasks[t]["predictions"]][-3:]
    for k, task in enumerate(beyond):
        ls.create_prediction(task, [], 0.5, f"{engine_id}.r{k}-00000{k}")
    _annotate(ls, app, client, dataset, 12, ids[2])
    assert refresher.wait_idle(30)
    listed = {v for v, n in ls.model_versions(PROJECT).items() if v.startswith(engine_id) and n}
    assert listed == {setup(client), archive}, listed
    assert [p["model_version"] for t in beyond for p in ls.tasks[t]["predictions"]] == [archive] * 3
