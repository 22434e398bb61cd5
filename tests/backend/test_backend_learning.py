"""Issue 10 wiring: one object = one reference, learning from corrections of a prediction (and its undo), the
bad inputs (a parent prediction that is gone, another model's, an unedited copy), calibrated thresholds in
/metrics. Payload mode (no API key): the task in the webhook payload carries its predictions."""
from __future__ import annotations

import copy
import logging

from prometheus_client.parser import text_string_to_metric_families

from support.backend_helpers import (annotation_result, created_webhook, learn, predict, region_for, send,
                             setup, snap, task_for)

from labelstudio_backend.predict.thresholds import project_thresholds

ANNOTATION = 90


def _refs(app, annotation_id=ANNOTATION):
    entries = snap(app).memory.entries(f"annotation:{annotation_id}")
    return [e for e in entries if not e.negative], [e for e in entries if e.negative]


def _predicted(app, client, dataset, image_id, prediction_id=555):
    """A prediction of this backend for `image_id`, shaped as Label Studio stores it."""
    setup(client)
    result = predict(client, [task_for(dataset, image_id)])[0]
    assert result["result"], "the memory found nothing on the image"
    return {"id": prediction_id, "task": 100 + image_id, "created_at": "2026-11-25T13:00:00Z",
            "updated_at": "2026-11-25T13:00:00Z", **result}


def _renamed(region_id: str) -> str:
    """Another id for a region, as a refreshed prediction names its regions afresh (never the same: an id that
    already began with "f" kept its name when the first character was simply set to "f")."""
    return ("e" if region_id.startswith("f") else "f") + region_id[1:]


def _instances(prediction):
    """Region ids of each predicted instance (they share the prefix before '-')."""
    groups: dict[str, list[dict]] = {}
    for region in prediction["result"]:
        groups.setdefault(region["id"].split("-")[0], []).append(region)
    return list(groups.values())


def _annotate(app, client, dataset, image_id, result, parent=None, predictions=(), lead_time=12.5):
    payload = created_webhook(dataset, ANNOTATION, image_id, result)
    payload["annotation"].update(parent_prediction=parent, lead_time=lead_time, created_at="2026-11-25T13:55:00Z")
    payload["task"]["predictions"] = [copy.deepcopy(p) for p in predictions]
    send(app, client, payload)


def test_brush_polygon_and_box_of_one_object_give_one_reference(app, client, dataset):
    image_id = dataset.positive_ids()[0]
    instances = dataset.instances(image_id)
    result = [r for label, mask in instances for kind in ("brush", "poly", "rect") for r in region_for(kind, label,
                                                                                                       mask)]
    _annotate(app, client, dataset, image_id, result, lead_time=None)
    references, negatives = _refs(app)
    assert len(references) == len(instances) and not negatives
    assert sorted(e.label for e in references) == sorted(label for label, _ in instances)
    record = snap(app).state.annotations[str(ANNOTATION)]
    assert record.regions == len(instances) and record.source == "drawn"


def test_deleted_prediction_becomes_a_negative_and_deleting_the_annotation_undoes_it(app, client, dataset):
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    instances = _instances(prediction)
    deleted, kept = instances[0], [r for group in instances[1:] for r in group]
    _annotate(app, client, dataset, image_id, kept, parent=prediction["id"], predictions=[prediction])
    references, negatives = _refs(app)
    assert len(negatives) == 1 and negatives[0].label == deleted[0]["value"][deleted[0]["type"]][0]
    assert len(references) == len(instances) - 1
    record = snap(app).state.annotations[str(ANNOTATION)]
    assert record.source == f"correction {prediction['id']}" and record.negatives == 1
    assert sum(1 for _, _, correct in record.observations if not correct) == 1
    assert sum(1 for _, _, correct in record.observations if correct) == len(instances) - 1
    revision = snap(app).memory.revision
    delete = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": ANNOTATION}], "project": {"id": 4}}
    send(app, client, delete)
    assert f"annotation:{ANNOTATION}" not in snap(app).memory and snap(app).memory.revision > revision
    assert str(ANNOTATION) not in snap(app).state.annotations  # its observations went with it


def test_relabelled_prediction_is_a_negative_of_the_old_class_and_a_reference_of_the_new(app, client, dataset):
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    group = _instances(prediction)[0]
    old = group[0]["value"][group[0]["type"]][0]
    new = next(label for label in ("red_stripes", "green_checker") if label != old)
    result = copy.deepcopy(prediction["result"])
    for region in result:
        if region["id"] in {r["id"] for r in group}:
            region["value"][region["type"]] = [new]
    _annotate(app, client, dataset, image_id, result, parent=prediction["id"], predictions=[prediction])
    references, negatives = _refs(app)
    assert [e.label for e in negatives] == [old]
    assert new in [e.label for e in references]
    assert snap(app).state.annotations[str(ANNOTATION)].missed == {new: 1}


def test_switching_learning_from_corrections_off(make_app, dataset):
    app = make_app(learn_from_corrections=False)
    client = app.test_client()
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    kept = [r for group in _instances(prediction)[1:] for r in group]
    _annotate(app, client, dataset, image_id, kept, parent=prediction["id"], predictions=[prediction])
    references, negatives = _refs(app)
    assert not negatives and len(references) == len(_instances(prediction)) - 1


def test_a_parent_prediction_that_no_longer_exists(app, client, dataset, caplog):
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    with caplog.at_level(logging.WARNING, logger="labelstudio_backend.learn.corrections"):
        _annotate(app, client, dataset, image_id, annotation_result(dataset, image_id), parent=4242)
    assert "parent prediction 4242 no longer exists; learning its regions as references only" in caplog.text
    references, negatives = _refs(app)
    assert len(references) == len(dataset.instances(image_id)) and not negatives


def test_a_parent_prediction_of_another_model(app, client, dataset, caplog):
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    other = {**prediction, "id": 777, "model_version": "yolo-v8"}
    kept = [r for group in _instances(prediction)[1:] for r in group]
    with caplog.at_level(logging.WARNING, logger="labelstudio_backend.learn.corrections"):
        _annotate(app, client, dataset, image_id, kept, parent=777, predictions=[other])
    assert "parent prediction 777 is from model 'yolo-v8', not this backend" in caplog.text
    references, negatives = _refs(app)
    assert not negatives and len(references) == len(_instances(prediction)) - 1


def test_an_unedited_copy_of_a_prediction(app, client, dataset, caplog):
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    with caplog.at_level(logging.INFO, logger="labelstudio_backend.learn.corrections"):
        _annotate(app, client, dataset, image_id, copy.deepcopy(prediction["result"]), parent=prediction["id"],
                  predictions=[prediction], lead_time=None)
    assert f"is an unedited copy of prediction {prediction['id']}" in caplog.text
    references, negatives = _refs(app)
    record = snap(app).state.annotations[str(ANNOTATION)]
    assert len(references) == len(_instances(prediction)) and not negatives
    assert record.observations == [] and record.source == f"copy {prediction['id']}"


def test_a_prediction_refreshed_after_the_annotator_opened_the_task(app, client, dataset, caplog):
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    seen = _predicted(app, client, dataset, image_id)
    kept = [r for group in _instances(seen)[1:] for r in group]  # what the annotator kept of what it saw
    # replaced in place since (predict/refresher.py): new content, new region ids, a later updated_at
    stored = {**seen, "updated_at": "2026-11-25T13:54:59Z",
              "result": [{**r, "id": _renamed(r["id"])} for r in seen["result"]]}
    with caplog.at_level(logging.WARNING, logger="labelstudio_backend.learn.corrections"):
        _annotate(app, client, dataset, image_id, kept, parent=stored["id"], predictions=[stored],
                  lead_time=60)  # opened at 13:54:00, the prediction changed at 13:54:59
    assert "was refreshed after the annotator opened the task" in caplog.text
    assert not _refs(app)[1]


def test_an_archived_parent_still_teaches_its_corrections(app, client, dataset, caplog):
    """Relabelling the parent to the archive version (after the annotation was learnt) moves its updated_at but not
    what it shows: a later resync must still learn the correction (it shares region ids with the annotation)."""
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    archived = {**prediction, "updated_at": "2026-11-25T13:54:59Z",
                "model_version": prediction["model_version"].rsplit(".r", 1)[0] + ".archived"}
    kept = [r for group in _instances(prediction)[1:] for r in group]  # one predicted object deleted
    with caplog.at_level(logging.INFO, logger="labelstudio_backend.learn.corrections"):
        _annotate(app, client, dataset, image_id, kept, parent=archived["id"], predictions=[archived], lead_time=60)
    assert "refreshed after the annotator" not in caplog.text and f"corrects prediction {prediction['id']}" in caplog.text
    assert _refs(app)[1]  # the deleted object is a negative example


def test_calibrated_thresholds_are_used_by_default_and_shown_in_metrics(make_app, dataset):
    """Only corrections teach here (no leave-one-out): every prediction of one class rejected puts its threshold
    above the highest rejected score; the kept class stays at or below its lowest kept score; a class nobody
    corrected keeps the default."""
    app = make_app(score_threshold=None, calibrate_leave_one_out=False)
    client = app.test_client()
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    group = _instances(prediction)[0]
    label = group[0]["value"][group[0]["type"]][0]
    rejected = [r for r in prediction["result"] if r["value"][r["type"]] == [label]]
    kept = [r for r in prediction["result"] if r not in rejected]
    _annotate(app, client, dataset, image_id, kept, parent=prediction["id"], predictions=[prediction])
    gauge = next(p for p in client.get("/metrics").json["projects"] if p["project"] == 4)
    assert gauge["threshold_source"] == "calibrated"
    assert gauge["calibration_observations"] == len(_instances(prediction))
    assert gauge["correction_negatives"] == len(_instances({"result": rejected}))
    assert gauge["thresholds"][label] > max(r["score"] for r in rejected)
    if kept:
        other = kept[0]["value"][kept[0]["type"]][0]
        assert gauge["thresholds"][other] <= min(r["score"] for r in kept)
    thresholds = project_thresholds(snap(app).state, app.extensions["ntt"].runtime.settings.score_threshold)
    assert thresholds.of("a class nobody corrected") == 0.5
    # the calibrated threshold filters: that class is no longer predicted on the same image
    again = predict(client, [task_for(dataset, image_id)])[0]
    assert not [r for r in again["result"] if r["value"][r["type"]] == [label]]
    text = client.get("/metrics?format=prometheus").get_data(as_text=True)
    samples = {(s.name, tuple(sorted(s.labels.items()))) for family in text_string_to_metric_families(text)
               for s in family.samples}
    assert ("ntt_score_threshold", (("label", label), ("project", "4"))) in samples
    # an explicit threshold wins over the calibration
    setup(client, extra_params='{"score_threshold": 0.7}')
    gauge = next(p for p in client.get("/metrics").json["projects"] if p["project"] == 4)
    assert gauge["threshold_source"] == "extra_params" and set(gauge["thresholds"].values()) == {0.7}


def test_a_duplicate_event_changes_neither_the_revision_nor_the_thresholds(make_app, dataset):
    """A redelivered annotation is unchanged, but its leave-one-out now runs against a memory that has grown: its
    observations must stay those of the memory it changed, or one model_version would answer two ways."""
    app = make_app(score_threshold=None)
    client = app.test_client()
    ids = dataset.positive_ids()
    first = created_webhook(dataset, 1, ids[0], annotation_result(dataset, ids[0]))
    send(app, client, first)
    for annotation_id, image_id in ((2, ids[1]), (3, ids[2]), (4, ids[3])):
        send(app, client, created_webhook(dataset, annotation_id, image_id, annotation_result(dataset, image_id)))
    before = snap(app)
    record, revision = copy.deepcopy(before.state.annotations["1"]), before.memory.revision
    thresholds = project_thresholds(before.state, app.extensions["ntt"].runtime.settings.score_threshold)
    send(app, client, first)  # the same event again
    after = snap(app)
    assert after.memory.revision == revision
    assert (after.state.annotations["1"].observations, after.state.annotations["1"].missed) == \
        (record.observations, record.missed)
    assert project_thresholds(after.state, app.extensions["ntt"].runtime.settings.score_threshold) == thresholds


def test_a_non_finite_score_in_a_deleted_prediction_is_never_stored(app, client, dataset):
    """A NaN (or 1e999) score in the parent prediction's region the annotator deleted used to be stored as a
    calibration observation; then /predict and /metrics answered 500 for the project until the annotation went."""
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    instances = _instances(prediction)
    for region in instances[0]:
        region["score"] = float("nan")
    for region in instances[1] if len(instances) > 1 else []:
        region["score"] = float("inf")
    kept = [r for group in instances[1:] for r in group]
    _annotate(app, client, dataset, image_id, kept, parent=prediction["id"], predictions=[prediction])
    record = snap(app).state.annotations[str(ANNOTATION)]
    assert all(0.0 <= score <= 1.0 for _, score, _ in record.observations), record.observations
    assert client.post("/predict", json={"tasks": [task_for(dataset, image_id)], "project": 4}).status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "error" not in next(p for p in metrics.json["projects"] if p["project"] == 4)


def test_a_bulk_event_never_learns_an_annotation_on_another_tasks_image(app, client, dataset):
    """ANNOTATIONS_CREATED naming tasks A and B but carrying only task A used to pool B's annotation on A's image
    (the one task of the payload was taken for every annotation)."""
    setup(client)
    a, b = dataset.positive_ids()[:2]
    on_a = created_webhook(dataset, 760, a, annotation_result(dataset, a))
    on_b = created_webhook(dataset, 761, b, annotation_result(dataset, b))
    bulk = {"action": "ANNOTATIONS_CREATED", "annotation": [on_a["annotation"], on_b["annotation"]],
            "task": [on_a["task"]], "project": on_a["project"]}
    send(app, client, bulk)
    memory = snap(app).memory
    assert memory.entries("annotation:760") and not memory.entries("annotation:761")
