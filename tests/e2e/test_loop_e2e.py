"""The human-in-the-loop loop against a real Label Studio 1.23.2 (issue 10): the next task of the label stream
carries the new model_version right after a submit; the background refresh replaces this backend's stale
predictions in place and leaves other models' alone; the Data Manager's prediction score is set; /train resyncs;
/versions lists the current model_version; brush + polygon + box of one object are one reference; deleting a
predicted false positive makes it disappear on similar tasks (the `hard` synthetic set: look-alikes).

The tests of one project run in order (pytest tests/e2e/test_loop_e2e.py -x).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from pycocotools import mask as mask_utils

from labelstudio_backend.labelstudio.label_config import DETAIL_ORDER, recommended_label_config
from local_stack import BackendServer, LabelStudioAPI, wait_until

from test_label_studio_e2e import (WAIT_S, backend_metrics, brush_result, decode_brush, gauge_of, ls_model_version,
                                   polygon_result, wait_backend_idle)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

OTHER_MODEL = "someone-else-v1"


@dataclass
class Loop:
    api: LabelStudioAPI
    backend: BackendServer
    project: int
    ml: dict
    synthetic: object
    names: dict[int, str]

    def gt_result(self, task: dict) -> list[dict]:
        image = self.synthetic.image_for_task(task)
        return [brush_result(mask_utils.decode(a["segmentation"]), self.names[a["category_id"]], i)
                for i, a in enumerate(self.synthetic.annotations_of(image["id"]))]

    def version(self) -> str:
        return gauge_of(wait_backend_idle(self.backend, lambda m: True, "an idle worker"), self.project)["model_version"]


@pytest.fixture(scope="module")
def loop(ls_api: LabelStudioAPI, synthetic, start_backend) -> Loop:
    names = {c["id"]: c["name"] for c in synthetic.coco["categories"]}
    project = ls_api.create_project("ntt e2e loop", recommended_label_config(list(names.values()), DETAIL_ORDER))["id"]
    ls_api.import_local_files(project, synthetic.images_dir, expected=len(synthetic.coco["images"]))
    backend = start_backend("loop", NTT_REFRESH_TASKS="6")
    ml = ls_api.connect_ml_backend(project, backend.url, title="ntt-label loop")
    wait_backend_idle(backend, lambda m: m["counters"].get("resyncs", 0) >= 1, "the first sync")
    return Loop(ls_api, backend, project, ml, synthetic, names)


def _own(predictions: list[dict], prefix: str) -> list[dict]:
    return [p for p in predictions if p["model_version"].startswith(prefix)]


def test_next_task_after_a_submit_carries_the_new_model_version(loop: Loop):
    """The label stream as the editor drives it: GET /api/projects/<id>/next, submit, next again. Label Studio
    calls /setup then /predict for the next task right after the submit returns; the backend's bounded waits make
    that /setup see the submit's event applied."""
    s = loop
    previous = s.version()
    task = s.api.next_task(s.project)
    labelled = 0
    while labelled < 4 and task is not None:
        result = s.gt_result(task)
        if not result:  # an empty image: skip it in the stream (a cancelled annotation changes nothing)
            s.api.create_annotation(task["id"], [], was_cancelled=True)
            task = s.api.next_task(s.project)
            continue
        t0 = time.monotonic()
        s.api.create_annotation(task["id"], result)
        task = s.api.next_task(s.project)
        served_s = time.monotonic() - t0
        labelled += 1
        assert task is not None
        current = gauge_of(backend_metrics(s.backend), s.project)["model_version"]
        versions = [p["model_version"] for p in task.get("predictions") or []]
        print(f"[e2e] submit -> next task {task['id']} served in {served_s:.2f} s with {versions}; memory {current}",
              file=sys.stderr)
        assert current != previous, "the submit did not change the memory"
        assert versions == [current], f"the next task carries {versions}, the memory is at {current}"
        previous = current
    assert labelled == 4
    counters = backend_metrics(s.backend)["counters"]
    print(f"[e2e] webhooks answered after their event was applied: {counters.get('webhooks_answered_applied', 0)}, "
          f"before: {counters.get('webhooks_answered_queued', 0)}; /setup waits {counters.get('fresh_waits_setup', 0)}"
          f", /setup timeouts {counters.get('fresh_wait_timeouts_setup', 0)}", file=sys.stderr)


def test_refresh_replaces_own_stale_predictions_and_leaves_other_models_alone(loop: Loop):
    s = loop
    prefix = s.version().rsplit(".r", 1)[0] + ".r"
    unlabelled = [t for t in s.api.list_tasks(s.project) if not t["total_annotations"]
                  and not t["cancelled_annotations"]]
    head = unlabelled[:3]
    # every task of the head carries a prediction of ours (the refresh after the last submit made them)
    def refreshed() -> dict | None:
        tasks = {t["id"]: t for t in s.api.list_tasks(s.project)}
        return tasks if all(_own(tasks[t["id"]]["predictions"], prefix) for t in head) else None

    wait_until(refreshed, WAIT_S, what="own predictions on the next tasks", proc=s.backend.proc,
               log=s.backend.log_path)
    target = head[1]["id"]
    s.api.create_prediction(target, [], OTHER_MODEL, score=0.3)
    before = {p["id"]: p for p in s.api.list_predictions(task=target)}
    own_before = _own(list(before.values()), prefix)
    assert len(own_before) == 1
    # a memory change: annotate a task far from the head
    far = next(t for t in reversed(unlabelled) if s.gt_result(t))
    passes = backend_metrics(s.backend)["counters"].get("refresh_passes", 0)
    s.api.create_annotation(far["id"], s.gt_result(far))
    version = s.version()
    assert version != own_before[0]["model_version"]

    def replaced() -> list[dict] | None:
        m = backend_metrics(s.backend)
        predictions = s.api.list_predictions(task=target)
        own = _own(predictions, prefix)
        done = m["counters"].get("refresh_passes", 0) > passes and [p["model_version"] for p in own] == [version]
        return predictions if done else None

    predictions = wait_until(replaced, WAIT_S, what="the stale prediction replaced", proc=s.backend.proc,
                             log=s.backend.log_path)
    own = _own(predictions, prefix)
    assert own[0]["id"] == own_before[0]["id"]  # replaced in place: an open editor's parent_prediction stays valid
    others = [p for p in predictions if p["model_version"] == OTHER_MODEL]
    assert len(others) == 1 and others[0]["score"] == pytest.approx(0.3)
    # annotations are never touched; the annotated far task keeps its annotation
    assert len(s.api.list_annotations(far["id"])) == 1


def test_data_manager_prediction_score_is_set(loop: Loop):
    s = loop

    def settled():
        """A listing taken while Label Studio's model_version is the backend's (a refresh pass of an earlier change
        may still be replacing predictions, and Label Studio scores only those of its current version)."""
        version = s.version()
        # Label Studio learns the model_version at /setup (each next task, the settings page): here, by listing
        if ls_model_version(s.api, s.project, s.ml["id"]) != version:
            return None
        tasks = s.api.list_tasks(s.project)
        current = [t for t in tasks if any(p["model_version"] == version for p in t["predictions"])]
        scored = all(t["predictions_score"] is not None for t in current)
        return (version, current) if current and scored and s.version() == version else None

    version, current = wait_until(settled, WAIT_S, interval=1.0, what="every task of the current version scored",
                                 proc=s.backend.proc, log=s.backend.log_path)
    for task in current:
        ours = next(p for p in task["predictions"] if p["model_version"] == version)
        assert task["predictions_score"] is not None, task["id"]
        assert task["predictions_score"] == pytest.approx(ours["score"], abs=1e-4)
        assert 0.0 <= task["predictions_score"] <= 1.0
    # sorting by it, as the Data Manager column does, puts the least certain tasks first
    body = s.api.get("/api/tasks/", params={"project": s.project, "fields": "all", "page_size": 100,
                                           "query": '{"ordering": ["tasks:predictions_score"]}'})
    scores = [t["predictions_score"] for t in body["tasks"] if t["predictions_score"] is not None]
    assert scores == sorted(scores) and len(scores) >= len(current)


def test_versions_lists_the_current_model_version(loop: Loop):
    s = loop
    answer = s.api.ml_versions(s.ml["id"])
    assert s.version() in answer["versions"], answer
    assert "message" not in answer  # Label Studio's "Upgrade your ML backend" means /versions failed


def test_train_resyncs(loop: Loop):
    """Label Studio's "Start training" (START_TRAINING webhook in 1.23.2) and the legacy POST /train (what it calls
    with the start-training flag off) both resync the project."""
    s = loop
    before = wait_backend_idle(s.backend, lambda m: True, "an idle worker")["counters"].get("resyncs", 0)
    s.api.train(s.ml["id"])
    wait_backend_idle(s.backend, lambda m: m["counters"].get("resyncs", 0) > before, "the resync of Start training")
    middle = backend_metrics(s.backend)["counters"]["resyncs"]
    r = requests.post(f"{s.backend.url}/train", json={"project": f"{s.project}.1795614847", "annotations": [],
                                                      "label_config": "<View/>", "params": {}}, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "resync queued", r.text
    wait_backend_idle(s.backend, lambda m: m["counters"].get("resyncs", 0) > middle, "the resync of POST /train")


def rectangle_result(mask, label: str, index: int) -> dict:
    ys, xs = mask.nonzero()
    height, width = mask.shape
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return {"id": f"gtr{index}", "from_name": "rect", "to_name": "image", "type": "rectanglelabels",
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "value": {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width,
                      "height": 100 * (y1 - y0) / height, "rotation": 0, "rectanglelabels": [label]}}


def test_brush_polygon_and_box_of_one_object_give_one_reference(loop: Loop):
    s = loop
    task = next(t for t in s.api.list_tasks(s.project) if not t["total_annotations"] and not t["cancelled_annotations"]
                and len(s.synthetic.annotations_of(s.synthetic.image_for_task(t)["id"])) >= 2)
    objects = s.synthetic.annotations_of(s.synthetic.image_for_task(task)["id"])
    result = []
    for i, a in enumerate(objects):
        mask, label = mask_utils.decode(a["segmentation"]).astype(bool), s.names[a["category_id"]]
        result += [brush_result(mask, label, i), polygon_result(mask, label, i), rectangle_result(mask, label, i)]
    before = gauge_of(wait_backend_idle(s.backend, lambda m: True, "an idle worker"), s.project)
    s.api.create_annotation(task["id"], result)
    m = wait_backend_idle(s.backend, lambda m: gauge_of(m, s.project)["annotations"] == before["annotations"] + 1,
                          "the three-control annotation in the memory")
    after = gauge_of(m, s.project)
    assert sum(after["references"].values()) - sum(before["references"].values()) == len(objects)
    assert m["counters"].get("regions_merged", 0) >= 2 * len(objects)


# ---------------------------------------------------------------------------------------------------- corrections


def _iou(a, b) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def _false_positives(prediction: dict, truths: list[tuple[str, object]]) -> list[list[dict]]:
    """The predicted instances (all regions sharing an id prefix) whose brush matches no object of its class."""
    groups: dict[str, list[dict]] = {}
    for region in prediction["result"]:
        if region["type"] != "textarea":  # the note of a prediction without regions
            groups.setdefault(region["id"].split("-")[0], []).append(region)
    wrong = []
    for regions in groups.values():
        brush = next(r for r in regions if r["type"] == "brushlabels")
        label, mask = brush["value"]["brushlabels"][0], decode_brush(brush)
        if max([_iou(mask, t) for name, t in truths if name == label], default=0.0) < 0.5:
            wrong.append(regions)
    return wrong


def test_deleting_a_predicted_false_positive_removes_it_on_similar_tasks(ls_api: LabelStudioAPI, ls_files_root,
                                                                        start_backend):
    from ntt_engine.synthetic import generate_dataset

    root = ls_files_root / "synthetic-hard"
    coco = json.loads(Path(generate_dataset(root, images=24, classes=3, seed=11, size=(256, 192),
                                            difficulty="hard")).read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    project = ls_api.create_project("ntt e2e corrections", recommended_label_config(list(names.values()), DETAIL_ORDER))["id"]
    tasks = ls_api.import_local_files(project, root / "images", expected=len(coco["images"]))
    image_of = {t["id"]: next(im for im in coco["images"] if im["file_name"] == t["data"]["image"].rsplit("/", 1)[-1])
                for t in tasks}
    truths = {t: [(names[a["category_id"]], mask_utils.decode(a["segmentation"]).astype(bool))
                  for a in coco["annotations"] if a["image_id"] == image_of[t]["id"]] for t in image_of}
    backend = start_backend("corrections", NTT_REFRESH_TASKS="0")
    ml = ls_api.connect_ml_backend(project, backend.url, title="ntt-label corrections")
    wait_backend_idle(backend, lambda m: m["counters"].get("resyncs", 0) >= 1, "the first sync")
    ordered = sorted(image_of, key=lambda t: image_of[t]["id"])
    references = [t for t in ordered if truths[t]][:6]
    for t in references:
        ls_api.create_annotation(t, [brush_result(m, n, i) for i, (n, m) in enumerate(truths[t])])
    wait_backend_idle(backend, lambda m: gauge_of(m, project).get("annotations") == len(references), "the references")
    rest = [t for t in ordered if t not in references]
    ls_api.retrieve_predictions(project, rest)
    version = ls_model_version(ls_api, project, ml["id"])
    first = {p["task"]: p for p in ls_api.list_predictions(project=project) if p["model_version"] == version}
    # the task to correct: the first with a false positive; the similar tasks: the others with one of that class
    corrected = next(t for t in rest if _false_positives(first[t], truths[t]))
    wrong = _false_positives(first[corrected], truths[corrected])
    label = wrong[0][0]["value"][wrong[0][0]["type"]][0]
    similar = [t for t in rest if t != corrected and any(g[0]["value"][g[0]["type"]][0] == label
                                                         for g in _false_positives(first[t], truths[t]))]
    assert similar, f"no other task has a {label} false positive"
    wrong_ids = {r["id"] for group in wrong for r in group}
    kept = [r for r in first[corrected]["result"] if r["id"] not in wrong_ids]
    ls_api.create_annotation(corrected, kept, parent_prediction=first[corrected]["id"], lead_time=4.0)
    m = wait_backend_idle(backend, lambda m: gauge_of(m, project).get("correction_negatives", 0) >= len(wrong),
                          "the deleted predictions as negative examples")
    new_version = gauge_of(m, project)["model_version"]
    assert new_version != version
    ls_api.retrieve_predictions(project, similar)
    after = {p["task"]: p for p in ls_api.list_predictions(project=project) if p["model_version"] == new_version}
    def count(predictions: dict, among: list[int]) -> int:
        return sum(1 for t in among for g in _false_positives(predictions[t], truths[t])
                   if g[0]["value"][g[0]["type"]][0] == label)

    assert set(similar) <= set(after)
    before_n, after_n = count(first, similar), count(after, similar)
    print(f"[e2e] {label} false positives on {len(similar)} similar task(s): {before_n} -> {after_n}", file=sys.stderr)
    assert after_n < before_n
    assert any(count(after, [t]) == 0 for t in similar)  # gone from at least one similar task


def test_the_dashboard_counts_the_corrections_made_in_label_studio(loop: Loop):
    """Issue 16 against the real Label Studio: a task labelled from its prediction with one object deleted and one
    added is counted exactly so on the dashboard; the stored prediction's regions say why they were predicted."""
    s = loop
    version = s.version()
    prefix = version.rsplit(".r", 1)[0] + ".r"
    unlabelled = [t for t in s.api.list_tasks(s.project) if not t["total_annotations"]
                  and not t["cancelled_annotations"]]

    def with_objects() -> tuple[dict, dict] | None:
        for task in unlabelled:
            own = [p for p in _own(s.api.list_predictions(task=task["id"]), prefix) if p["model_version"] == version]
            objects = {r["id"].split("-")[0] for r in own[-1]["result"]} if own else set()  # current: no refresh
            if len(objects) >= 2:
                return task, own[-1]
        return None

    task, prediction = wait_until(with_objects, WAIT_S, what="a task predicted with two objects or more",
                                  proc=s.backend.proc, log=s.backend.log_path)
    for region in prediction["result"]:  # stored by Label Studio with the explanation the backend gave
        label = region["value"][region["type"]][0]
        assert region["meta"]["text"][0].startswith(f"{label}: score "), region["meta"]
        assert "most similar reference: task " in region["meta"]["text"][0]
    deleted = prediction["result"][0]["id"].split("-")[0]
    kept = [r for r in prediction["result"] if r["id"].split("-")[0] != deleted]
    corner = np.zeros((prediction["result"][0]["original_height"], prediction["result"][0]["original_width"]), bool)
    corner[:6, :6] = True  # a small object nothing predicted: one addition
    added_label = s.names[min(s.names)]
    before = s.backend.get(f"/dashboard/{s.project}.json").json()
    annotation = s.api.create_annotation(task["id"], kept + [brush_result(corner, added_label, 99)],
                                         parent_prediction=prediction["id"], lead_time=6.0)

    def counted() -> dict | None:
        stats = s.backend.get(f"/dashboard/{s.project}.json").json()
        return stats if stats["recent"] and stats["recent"][0]["annotation"] == annotation["id"] else None

    stats = wait_until(counted, WAIT_S, what="the correction on the dashboard", proc=s.backend.proc,
                       log=s.backend.log_path)
    row = stats["recent"][0]
    assert (row["task"], row["deleted"], row["added"], row["relabelled"]) == (task["id"], 1, 1, 0), row
    assert row["unchanged"] + row["redrawn"] == len({r["id"].split("-")[0] for r in kept})
    assert stats["annotations"]["from_predictions"] == before["annotations"]["from_predictions"] + 1
    assert stats["totals"]["deleted"] == before["totals"]["deleted"] + 1
    page = s.backend.get(f"/dashboard/{s.project}")
    assert page.status_code == 200 and all(name in page.text for name in s.names.values())


def test_submits_keep_one_prediction_per_task_and_the_version_list_short(loop: Loop):
    """Issue 19 against the real Label Studio: a run of submits through the label stream, each naming the prediction
    it started from. Sampled all along, no unannotated task ever holds two live predictions of this backend (superseded
    ones are archived, never deleted: an open editor's submit names them); afterwards
    Label Studio lists this backend's current version, its `.archived` version and at most 2 others, and every
    annotation still names its parent prediction, now archived."""
    import threading

    s = loop
    engine = s.version().rsplit(".r", 1)[0]
    annotated = {t["id"] for t in s.api.list_tasks(s.project) if t["total_annotations"] or t["cancelled_annotations"]}
    violations, samples, stop = [], [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            done = set(annotated)
            mine: dict[int, list[str]] = {}
            for p in s.api.list_predictions(project=s.project):
                if p["model_version"].startswith(engine + ".r") and p["task"] not in done:  # live, not archived
                    mine.setdefault(p["task"], []).append(p["model_version"])
            violations.extend(f"task {t}: {v}" for t, v in mine.items() if len(v) > 1 and t not in annotated)
            samples[0] += 1
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    submitted = []
    try:
        task = s.api.next_task(s.project)
        while task is not None and len(submitted) < 8:
            result = s.gt_result(task)
            served = [p for p in task.get("predictions") or [] if p["model_version"].startswith(engine + ".r")]
            annotated.add(task["id"])  # from here on it may hold what it held when served
            annotation = s.api.create_annotation(task["id"], result, was_cancelled=not result,
                                                 **({"parent_prediction": served[-1]["id"]} if served else {}))
            submitted.append((annotation, served[-1]["id"] if served else None))
            task = s.api.next_task(s.project)
    finally:
        stop.set()
        sampler.join(10)
    current = s.version()

    # the parents of learnt annotations are archived once superseded; a skip's (a cancelled annotation: nothing
    # learnt) keeps its version, which counts among the at most 2 superseded versions listed
    parents = [parent for annotation, parent in submitted if parent is not None and not annotation.get("was_cancelled")]

    def short() -> dict | None:
        listed = s.api.get(f"/api/projects/{s.project}/model-versions/")
        own = {v: n for v, n in listed.items() if v.startswith(engine + ".") and n}
        # a parent still current (a cancelled annotation changes no memory) adds no entry to the list
        archived = all(s.api.get(f"/api/predictions/{p}/")["model_version"] in (engine + ".archived", current)
                       for p in parents)
        return own if archived and len(set(own) - {current, engine + ".archived"}) <= 2 else None

    own = wait_until(short, WAIT_S, what="a short version list", proc=s.backend.proc, log=s.backend.log_path)
    print(f"[e2e] {len(submitted)} submits, {samples[0]} samples of every task's predictions; Label Studio lists "
          f"{own} of this backend", file=sys.stderr)
    assert len(submitted) >= 6 and samples[0] >= 10
    assert not violations, violations[:5]
    assert current in own and engine + ".archived" in own
    for annotation, parent in submitted:
        if parent is not None:  # the link to the prediction it started from survives the relabelling
            assert s.api.get(f"/api/annotations/{annotation['id']}/")["parent_prediction"] == parent
