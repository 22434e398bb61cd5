"""Issue 16: what an annotation cost (ntt_engine/effort.py), the project's figures summed from it (report/stats.py), and
the dashboard routes. Payload mode: the task in the webhook payload carries its predictions."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ntt_engine.effort import correction_effort, drawn_effort, edits
from ntt_engine.corrections import LabelledMask, diff_correction
from support.backend_helpers import (annotation_result, created_webhook, learn, predict, region_for, send, setup, snap,
                                     task_for)
from test_backend_learning import ANNOTATION, _annotate, _instances, _predicted


def box(x0, y0, x1, y1, size=(40, 40)):
    mask = np.zeros(size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_the_effort_of_a_correction_counts_each_outcome():
    predicted = [LabelledMask("cat", box(0, 0, 10, 10), 0.9, "a-0"), LabelledMask("cat", box(20, 0, 30, 10), 0.8, "b-0"),
                 LabelledMask("dog", box(0, 20, 10, 30), 0.7, "c-0"), LabelledMask("dog", box(20, 20, 30, 30), 0.6, "d-0")]
    final = [LabelledMask("cat", box(0, 0, 10, 10), None, "a-0"),  # unchanged
             LabelledMask("cat", box(20, 0, 26, 10), None, "b-0"),  # redrawn: IoU 0.6
             LabelledMask("cat", box(0, 20, 10, 30), None, "c-0"),  # relabelled dog -> cat
             LabelledMask("dog", box(32, 32, 38, 38), None)]  # added; d-0 deleted
    effort = correction_effort(diff_correction(predicted, final), redraw_iou=0.9, lead_time=12.5)
    assert {k: effort[k] for k in ("unchanged", "redrawn", "relabelled", "deleted", "added")} == \
        {"unchanged": 1, "redrawn": 1, "relabelled": 1, "deleted": 1, "added": 1}
    assert edits(effort) == 4 and effort["lead_time"] == 12.5 and effort["source"] == "correction"
    assert effort["per_class"]["cat"] == {"predicted": 2, "kept": 2, "deleted": 0, "added": 1, "final": 3}
    assert effort["per_class"]["dog"] == {"predicted": 2, "kept": 0, "deleted": 2, "added": 1, "final": 1}
    # the IoU that counts as a redraw is the caller's
    assert correction_effort(diff_correction(predicted, final), redraw_iou=0.5)["redrawn"] == 0
    drawn = drawn_effort(final, lead_time=True)
    assert drawn["added"] == 4 and edits(drawn) == 4 and drawn["lead_time"] is None
    assert all(row["predicted"] == 0 for row in drawn["per_class"].values())


def test_a_correction_is_counted_and_deleting_it_undoes_it(app, client, dataset):
    learn(app, client, dataset)
    client.post("/setup", json={"project": "4.1", "schema": snap(app).state.label_config})
    before = client.get("/dashboard/4.json").json
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    instances = _instances(prediction)
    label, mask = dataset.instances(dataset.positive_ids()[6])[0]
    result = [r for group in instances[1:] for r in group] + region_for("brush", label, mask)  # 1 deleted, 1 added
    _annotate(app, client, dataset, image_id, result, parent=prediction["id"], predictions=[prediction])
    after = client.get("/dashboard/4.json").json
    assert after["annotations"]["from_predictions"] == before["annotations"]["from_predictions"] + 1
    last = after["recent"][0]
    assert last["annotation"] == ANNOTATION and last["deleted"] == 1 and last["added"] == 1
    assert last["unchanged"] + last["redrawn"] == len(instances) - 1 and last["edits"] == 2 + last["redrawn"]
    assert after["totals"]["edits"] == before["totals"]["edits"] + last["edits"]
    assert after["curve"][-1]["annotation"] == ANNOTATION and after["curve"][-1]["source"] == "correction"
    rows = {row["label"]: row for row in after["classes"]}
    assert sum(row["predicted"] for row in rows.values()) == len(instances)
    assert all(row["precision"] is None or 0 <= row["precision"] <= 1 for row in rows.values())
    # the annotations drawn from scratch (learn()) predicted nothing: no precision from them
    assert before["annotations"]["drawn"] == 4 and all(row["precision"] is None for row in before["classes"])
    # the same counts in /metrics, per project, label and outcome
    text = client.get("/metrics?format=prometheus").get_data(as_text=True)
    outcomes = {(s.labels["label"], s.labels["outcome"]): s.value for family in text_string_to_metric_families(text)
                if family.name == "ntt_region_outcomes" for s in family.samples if s.labels["project"] == "4"}
    assert outcomes == {(label, outcome): float(row[outcome]) for label, row in rows.items() if row["predicted"] or
                        row["added"] for outcome in ("predicted", "kept", "deleted", "added")}
    send(app, client, {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": ANNOTATION}], "project": {"id": 4}})
    undone = client.get("/dashboard/4.json").json
    assert {k: undone[k] for k in ("totals", "annotations", "recent")} == \
        {k: before[k] for k in ("totals", "annotations", "recent")}


def test_the_dashboard_pages(app, client, dataset):
    assert client.get("/dashboard").status_code == 200  # no project yet: a page that says so
    assert b"No project yet" in client.get("/dashboard").data
    setup(client)
    empty = client.get("/dashboard/4")
    assert empty.status_code == 200 and b"No labelled task counted yet" in empty.data
    learn(app, client, dataset)
    page = client.get("/dashboard/4")
    assert page.status_code == 200 and page.mimetype == "text/html"
    for label in ("red_stripes", "green_checker"):
        assert label.encode() in page.data
    assert b"No correction yet" in page.data and b"/dashboard/4/effort.png" in page.data
    chart = client.get("/dashboard/4/effort.png")
    assert chart.status_code == 200 and chart.data.startswith(b"\x89PNG")
    index = client.get("/dashboard")
    assert b'href="/dashboard/4"' in index.data


@pytest.mark.parametrize("path", ["/dashboard/5", "/dashboard/5.json", "/dashboard/5/effort.png", "/dashboard/x",
                                  "/dashboard/%D9%A4", "/dashboard/..%2f4"])
def test_an_unknown_project_is_a_clear_404(client, path):
    setup(client)
    response = client.get(path)
    assert response.status_code == 404 and response.is_json
    if "%2f" not in path:  # a path with a slash matches no dashboard route at all: the generic 404
        assert "no project" in response.json["error"] and "[4]" in response.json["error"]


def test_a_resync_rebuilds_the_same_figures(app, client, dataset):
    learn(app, client, dataset, kinds=("brush", "poly"))
    first = copy.deepcopy(client.get("/dashboard/4.json").json)
    state = snap(app).state
    assert all(record.effort for record in state.annotations.values())
    for annotation_id, image_id in zip((10, 11), dataset.positive_ids()[:2]):  # the same events again
        payload = created_webhook(dataset, annotation_id, image_id, annotation_result(dataset, image_id,
                                                                                      ("brush", "poly")[annotation_id - 10]))
        payload["annotation"]["updated_at"] = "2026-11-26T10:00:00Z"
        send(app, client, payload)
    again = client.get("/dashboard/4.json").json
    assert {k: again[k] for k in ("totals", "annotations", "classes")} == \
        {k: first[k] for k in ("totals", "annotations", "classes")}


def test_the_dashboard_needs_the_credentials_when_basic_auth_is_set(make_app):
    client = make_app(basic_auth_user="ann", basic_auth_pass="s3cret").test_client()
    for path in ("/dashboard", "/dashboard/4", "/dashboard/4.json", "/dashboard/4/effort.png",
                 "/dashboard/4/thumb/10/0.png"):
        assert client.get(path).status_code == 401, path
    assert client.get("/dashboard", auth=("ann", "s3cret")).status_code == 200


def test_an_annotation_without_objects_counts_the_prediction_it_rejected(app, client, dataset):
    learn(app, client, dataset)
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    _annotate(app, client, dataset, image_id, [], parent=prediction["id"], predictions=[prediction])
    record = snap(app).state.annotations[str(ANNOTATION)]
    assert record.kind == "negative" and record.effort["source"] == "correction"
    assert record.effort["deleted"] == len(_instances(prediction)) and edits(record.effort) == record.effort["deleted"]
    # an empty prediction accepted as empty: the model and the annotator agreed, nothing to edit
    empty = {**prediction, "id": 556, "result": [], "score": 0.0}
    _annotate(app, client, dataset, image_id, [], parent=empty["id"], predictions=[empty])
    record = snap(app).state.annotations[str(ANNOTATION)]
    assert record.effort["source"] == "correction" and edits(record.effort) == 0
    assert client.get("/dashboard/4.json").json["recent"][0]["edits"] == 0


def test_each_predicted_region_says_why_it_was_predicted(app, client, dataset):
    images = learn(app, client, dataset)
    setup(client)
    result = predict(client, [task_for(dataset, dataset.positive_ids()[6])])[0]["result"]
    assert result
    learnt_tasks = {100 + i for i in images}
    for region in result:
        (text,) = region["meta"]["text"]
        label = region["value"][region["type"]][0]
        assert text.startswith(f"{label}: score {region['score']:.2f} (threshold ")
        task = int(text.split("most similar reference: task ")[1].split(" ")[0])
        assert task in learnt_tasks  # a task whose annotation holds a reference of that class
        similarity = float(text.rsplit("similarity ", 1)[1].rstrip(")"))
        assert 0.0 < similarity <= 1.0
    # one object's regions (brush, polygon, box) share one explanation
    by_object: dict[str, set] = {}
    for region in result:
        by_object.setdefault(region["id"].split("-")[0], set()).add(region["meta"]["text"][0])
    assert all(len(texts) == 1 for texts in by_object.values())


def test_the_gallery_shows_the_memory_in_pictures_and_forgets_a_deleted_annotation(app, client, dataset):
    """A thumbnail per reference (its mask outlined on a crop of its image), per negative example and per negative
    image, linked to its task; deleting the annotation takes its pictures away."""
    import io

    from PIL import Image

    from labelstudio_backend.learn.thumbnails import OUTLINE, SIZE
    learn(app, client, dataset)
    client.post("/setup", json={"project": "4.1", "schema": snap(app).state.label_config})
    image_id = dataset.positive_ids()[5]
    prediction = _predicted(app, client, dataset, image_id)
    instances = _instances(prediction)
    _annotate(app, client, dataset, image_id, [r for group in instances[1:] for r in group], parent=prediction["id"],
              predictions=[prediction])  # one predicted object deleted: a negative example
    send(app, client, created_webhook(dataset, 30, dataset.negative_ids()[0], []))  # a negative image
    stats = client.get("/dashboard/4.json").json
    groups = {g["group"]: g["tiles"] for g in stats["gallery"]}
    state = snap(app).state
    references = sum(1 for r in state.annotations.values() for _, kind in r.thumbs if kind == "reference")
    assert sum(1 for tiles in groups.values() for t in tiles if t["kind"] == "reference") == references > 0
    assert any(t["kind"] == "negative" and t["annotation"] == ANNOTATION for tiles in groups.values() for t in tiles)
    assert [t["annotation"] for t in groups["negative images"]] == [30]
    for tiles in groups.values():
        for tile in tiles:
            assert state.annotations[str(tile["annotation"])].task_id == tile["task"]
            picture = client.get(f"/dashboard/4/thumb/{tile['annotation']}/{tile['index']}.png")
            assert picture.status_code == 200 and picture.mimetype == "image/png"
            pixels = np.asarray(Image.open(io.BytesIO(picture.data)).convert("RGB"))
            assert max(pixels.shape[:2]) == SIZE
            if tile["kind"] != "negative image":  # the object is outlined
                assert (pixels == OUTLINE).all(axis=2).sum() >= 8
    page = client.get("/dashboard/4").data.decode()
    assert "The memory in pictures" in page and f"/dashboard/4/thumb/{ANNOTATION}/" in page
    # deleting an annotation takes its pictures with it; an index it never had is a 404 with a message
    send(app, client, {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": ANNOTATION}], "project": {"id": 4}})
    assert client.get(f"/dashboard/4/thumb/{ANNOTATION}/0.png").status_code == 404
    assert not list((app.extensions["ntt"].runtime.store.project_dir(4) / "thumbs").glob(f"{ANNOTATION}.*"))
    missing = client.get("/dashboard/4/thumb/30/5.png")
    assert missing.status_code == 404 and "no thumbnail" in missing.json["error"]
    assert client.get("/dashboard/5/thumb/30/0.png").status_code == 404
    assert all(t["annotation"] != ANNOTATION for g in client.get("/dashboard/4.json").json["gallery"] for t in g["tiles"])
