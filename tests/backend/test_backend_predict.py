"""/predict through Flask's test client: batches in order, decoded regions against the synthetic ground truth,
unreadable images, interactive (smart tool) prompts."""
import numpy as np
import pytest

from labelstudio_backend.store.versions import revision_of
from support.backend_helpers import (LABEL_CONFIG, best_ious, decode, inside_point, iou, learn, predict, sample, setup,
                             task_for)


@pytest.mark.parametrize("fill", ["one", "all"])
def test_predict_batch_one_result_per_task_in_order_matching_the_gt(app, client, dataset, fill):
    """The config has a brush, a polygon and a box control: by default each object is one brush region; with
    extra_params {"region_controls": "all"} it fills all three, under another model_version."""
    learned = learn(app, client, dataset)
    default_version = setup(client)
    version = setup(client, extra_params={"region_controls": fill})
    assert (version == default_version) == (fill == "one")
    kinds = ("brushlabels", "polygonlabels", "rectanglelabels") if fill == "all" else ("brushlabels",)
    targets = [i for i in range(1, 13) if i not in learned]
    results = predict(client, [task_for(dataset, i) for i in targets])
    assert len(results) == len(targets)
    for image_id, prediction in zip(targets, results):
        assert prediction["model_version"] == version
        ids = [r["id"] for r in prediction["result"]]
        assert len(ids) == len(set(ids))
        if image_id in dataset.negative_ids():
            assert len(prediction["result"]) <= 3
            continue
        assert {r["type"] for r in prediction["result"]} <= set(kinds)
        for kind in kinds:
            scores = best_ious(dataset, image_id, prediction["result"], kind)
            assert np.mean(scores) >= 0.8, (image_id, kind, scores)
        regions = prediction["result"]
        assert all(r["original_width"] == 160 and r["original_height"] == 120 and r["image_rotation"] == 0
                   for r in regions)
        # the task-level score is the memory's certainty about the image (predict/task_score.py), not a mean
        assert 0.0 <= prediction["score"] <= 1.0


def test_unreadable_image_gives_an_empty_prediction_and_the_batch_goes_on(app, client, dataset):
    learn(app, client, dataset, kinds=("brush", "brush"))
    good = task_for(dataset, dataset.positive_ids()[3])
    missing, traversal, no_url = (task_for(dataset, 1) for _ in range(3))
    missing["data"]["image"] = "/data/local-files/?d=images/nope.png"
    traversal["data"]["image"] = "/data/local-files/?d=../../../etc/shadow"
    no_url["data"] = {"text": "x"}
    results = predict(client, [good, missing, traversal, no_url, "junk", good])
    assert len(results) == 6
    assert results[0]["result"] and results[5]["result"]
    for empty in results[1:5]:
        assert empty["result"] == [] and empty["score"] == 0.0
    metrics = client.get("/metrics").json
    assert metrics["counters"]["image_errors"] == 3


def test_predict_without_references_or_for_unknown_project_is_empty(client, dataset):
    results = predict(client, [task_for(dataset, 1, project=77)] * 2)
    assert [r["result"] for r in results] == [[], []]
    assert revision_of(results[0]["model_version"]) == 0


@pytest.mark.parametrize("body,status", [({"project": "4.1"}, 400), ({"tasks": "x", "project": "4.1"}, 400),
                                         ({"tasks": [{"id": 1}]}, 400)])
def test_predict_errors(client, body, status):
    body = {**body, "label_config": LABEL_CONFIG}
    response = client.post("/predict", json=body)
    assert response.status_code == status and "error" in response.json


def test_predict_with_unsupported_config_is_a_400(client, dataset):
    config = '<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>'
    body = {"tasks": [task_for(dataset, 1)], "project": "9.1", "label_config": config}
    response = client.post("/predict", json=body)
    assert response.status_code == 400 and "no BrushLabels" in response.json["error"]


def test_interactive_click_returns_the_sam_mask_as_a_brush(client, dataset):
    image_id = dataset.positive_ids()[0]
    label, gt = dataset.instances(image_id)[0]
    body = sample("predict_interactive_from_LS")
    body["label_config"] = LABEL_CONFIG
    body["tasks"][0]["data"] = {"image": dataset.url(image_id)}
    click = body["params"]["context"]["result"][0]
    x, y = inside_point(gt)
    click.update(from_name="kp", original_width=160, original_height=120)
    click["value"].update(x=x, y=y, keypointlabels=[label])
    response = client.post("/predict", json=body)
    assert response.status_code == 200
    (prediction,) = response.json["results"]
    (region,) = prediction["result"]
    assert region["type"] == "brushlabels" and region["from_name"] == "brush"
    assert region["value"]["brushlabels"] == [label]
    assert iou(decode(region), gt) >= 0.9

    # a negative click only: no mask; a box prompt (smart rectangle): the object in it
    click["is_positive"] = False
    assert client.post("/predict", json=body).json["results"][0]["result"] == []
    ys, xs = np.nonzero(gt)
    box = {"type": "rectanglelabels", "from_name": "rect", "to_name": "image", "original_width": 160,
           "original_height": 120, "value": {"x": xs.min() * 100 / 160, "y": ys.min() * 100 / 120,
                                             "width": (xs.max() + 1 - xs.min()) * 100 / 160,
                                             "height": (ys.max() + 1 - ys.min()) * 100 / 120,
                                             "rotation": 0, "rectanglelabels": [label]}}
    body["params"]["context"] = {"result": [box]}
    (region,) = client.post("/predict", json=body).json["results"][0]["result"]
    assert iou(decode(region), gt) >= 0.9


def test_an_engine_failure_on_one_task_does_not_fail_the_batch(app, client, dataset, monkeypatch):
    learn(app, client, dataset, kinds=("brush",))
    engine = app.extensions["ntt"].runtime.engine()
    real = engine.detect
    calls = []

    def flaky(image, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return real(image, **kwargs)

    monkeypatch.setattr(engine, "detect", flaky)
    results = predict(client, [task_for(dataset, i) for i in dataset.positive_ids()[2:4]])
    assert results[0]["result"] == [] and results[1]["result"]


def test_a_prediction_without_regions_says_so_in_the_configs_note(app, client, dataset):
    """Label Studio shows a region-less prediction like none at all: with a `ntt_note` TextArea in the config the
    backend writes why there is nothing (nothing learnt yet, or nothing found); a config without it gets [] as before,
    and a prediction with regions gets no note."""
    from labelstudio_backend.labelstudio.label_config import NOTE_CONTROL, parse_label_config, \
        recommended_label_config
    with_note = recommended_label_config(["red_stripes", "green_checker", "blue_dots"])
    assert parse_label_config(with_note).note.name == NOTE_CONTROL
    negative, positive = dataset.negative_ids()[0], dataset.positive_ids()[-1]

    def notes(results):
        return [[r["value"]["text"][0] for r in p["result"] if r["type"] == "textarea"] for p in results]

    before = predict(client, [task_for(dataset, negative)], label_config=with_note)
    assert notes(before) == [[before[0]["result"][0]["value"]["text"][0]]]
    assert "learnt nothing in this project yet" in notes(before)[0][0]
    assert before[0]["result"][0]["from_name"] == NOTE_CONTROL and before[0]["result"][0]["to_name"] == "image"
    learn(app, client, dataset)
    after = predict(client, [task_for(dataset, negative), task_for(dataset, positive)], label_config=with_note)
    assert "found no object scoring above its thresholds" in notes(after)[0][0] and len(after[0]["result"]) == 1
    assert notes(after)[1] == [] and after[1]["result"]  # regions, no note
    plain = predict(client, [task_for(dataset, negative)])  # the 3-control config without the TextArea
    assert plain[0]["result"] == []
