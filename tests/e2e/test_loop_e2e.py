"""The human-in-the-loop loop against a real Label Studio 1.23.2 (issue 10): the next task of the label stream
carries the new model_version right after a submit; the background refresh replaces this backend's stale
predictions in place and leaves other models' alone; the Data Manager's prediction score is set; /train resyncs;
/versions lists the current model_version.

The tests share one project and run in order (pytest tests/e2e/test_loop_e2e.py -x).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import pytest
import requests
from pycocotools import mask as mask_utils

from labelstudio_backend.label_config import recommended_label_config
from labelstudio_backend.local_stack import BackendServer, LabelStudioAPI, wait_until

from test_label_studio_e2e import (WAIT_S, backend_metrics, brush_result, gauge_of, ls_model_version,
                                   wait_backend_idle)

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
    project = ls_api.create_project("ntt e2e loop", recommended_label_config(list(names.values())))["id"]
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
    version = s.version()
    # Label Studio learns the model_version at /setup (each next task, the settings page): here, by listing backends
    assert ls_model_version(s.api, s.project, s.ml["id"]) == version
    tasks = s.api.list_tasks(s.project)
    current = [t for t in tasks if any(p["model_version"] == version for p in t["predictions"])]
    assert current, "no task carries a prediction of the current version"
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
