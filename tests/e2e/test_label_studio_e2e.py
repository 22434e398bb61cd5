"""End to end against a real Label Studio 1.23.2 and this backend as a separate process (NTT_PRESET=synthetic).

issue 4, "End to end": a project with BrushLabels + PolygonLabels + RectangleLabels on synthetic images served as
local files; the backend connected through the API; annotations for 3 images per class created through the API;
then: the webhooks reached the memory; "Retrieve predictions" stores predictions under the new model_version; their
masks, decoded from Label Studio's stored brush RLE, reach COCOeval segm AP >= 0.9 on the other images; deleting an
annotation removes its references and changes model_version; with basic auth on the backend, Label Studio's
auto-created webhook still reaches the memory when an API key is set, and is refused (401) without an API key until
the webhook carries the Authorization header.
Also: an uploaded image (/data/upload/, fetched with the PAT) predicts like its local-file twin; a smart-tool box
returns the object's mask; PolygonLabels annotations and updates; skipped and empty annotations; "Start training";
gunicorn with 2 workers sharing one MODEL_DIR.

The tests of the main scenario share state in order; run the module as a whole (pytest tests/e2e -x).
"""
from __future__ import annotations

import base64
import copy
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pytest
import requests
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from labelstudio_backend.labelstudio.label_config import DETAIL_ORDER, recommended_label_config
from local_stack import BackendServer, LabelStudioAPI, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

REFERENCES_PER_CLASS = 3
AP_MIN = 0.9
WAIT_S = 60.0  # bound for every "until the backend applied it" poll

def label_config(names: list[str]) -> str:
    """A brush, a polygon and a box control: each predicted object is one brush region (NTT_REGION_CONTROLS=one)."""
    return recommended_label_config(list(names), DETAIL_ORDER)


# ---------------------------------------------------------------------------------------------------- helpers


def brush_result(mask: np.ndarray, label: str, index: int) -> dict:
    """A Label Studio BrushLabels region from a binary mask (LS renders the alpha channel: 0/255)."""
    from label_studio_sdk.converter.brush import mask2rle

    height, width = mask.shape
    return {"id": f"gt{index}", "from_name": "brush", "to_name": "image", "type": "brushlabels",
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "value": {"format": "rle", "rle": mask2rle((mask > 0).astype(np.uint8) * 255), "brushlabels": [label]}}


def polygon_result(mask: np.ndarray, label: str, index: int) -> dict:
    """A PolygonLabels region (percent coordinates) tracing the outer contour of a binary mask."""
    import cv2

    height, width = mask.shape
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)[:, 0, :].astype(float)
    points = [[100.0 * (x + 0.5) / width, 100.0 * (y + 0.5) / height] for x, y in contour]
    return {"id": f"gtp{index}", "from_name": "poly", "to_name": "image", "type": "polygonlabels",
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "value": {"points": points, "closed": True, "polygonlabels": [label]}}


def decode_brush(result: dict) -> np.ndarray:
    """The boolean mask of a stored brush region, decoded from Label Studio's RLE."""
    from label_studio_sdk.converter.brush import decode_rle

    height, width = int(result["original_height"]), int(result["original_width"])
    rgba = np.asarray(decode_rle(result["value"]["rle"]), dtype=np.uint8).reshape(height, width, 4)
    return rgba[:, :, 3] > 127


def backend_metrics(backend: BackendServer) -> dict:
    r = backend.get("/metrics")
    r.raise_for_status()
    return r.json()


def project_gauge(backend: BackendServer, project: int) -> dict | None:
    return next((p for p in backend_metrics(backend).get("projects", []) if p["project"] == project), None)


def request_count(metrics: dict, route: str, status: int) -> int:
    return sum(r["count"] for r in metrics.get("requests", []) if r["route"] == route and r["status"] == status)


def wait_backend_idle(backend: BackendServer, predicate, what: str, timeout: float = WAIT_S) -> dict:
    """Poll /metrics until the worker's queue is empty and `predicate(metrics)` holds."""
    def check():
        m = backend_metrics(backend)
        return m if m.get("queue_length", 1) == 0 and m.get("engine") == "ready" and predicate(m) else None

    try:
        return wait_until(check, timeout, interval=0.3, what=what, proc=backend.proc, log=backend.log_path)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nlast metrics: {backend_metrics(backend)}\nbackend log:\n{backend.log()}") from None


def gauge_of(metrics: dict, project: int) -> dict:
    return next((p for p in metrics.get("projects", []) if p["project"] == project), {})


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ls_model_version(api: LabelStudioAPI, project: int, ml_id: int) -> str:
    """Listing a project's ML backends makes Label Studio call /health + /setup and store the answer."""
    backends = api.list_ml_backends(project)
    return next(b for b in backends if b["id"] == ml_id)["model_version"]


# ---------------------------------------------------------------------------------------------------- the scenario


@dataclass
class Scenario:
    api: LabelStudioAPI
    backend: BackendServer
    project: int
    ml: dict
    tasks: list[dict]
    coco: dict
    names: dict[int, str]  # category id -> label
    task_of_image: dict[int, int]  # COCO image id -> task id
    reference_images: list[int] = field(default_factory=list)
    annotations: dict[int, dict] = field(default_factory=dict)  # COCO image id -> LS annotation
    regions: dict[int, int] = field(default_factory=dict)  # COCO image id -> number of regions
    initial_version: str = ""
    version_after_refs: str = ""


def pick_reference_images(coco: dict, per_class: int) -> list[int]:
    """The first `per_class` images (by id) that contain each class; all their instances get annotated."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for image in sorted(coco["images"], key=lambda im: im["id"]):
        present = {a["category_id"] for a in coco["annotations"] if a["image_id"] == image["id"]}
        for category in present:
            by_class[category].append(image["id"])
    chosen: set[int] = set()
    for category in sorted(c["id"] for c in coco["categories"]):
        assert len(by_class[category]) >= per_class + 2, f"too few images of class {category} in the data set"
        chosen.update(by_class[category][:per_class])
    return sorted(chosen)


@pytest.fixture(scope="module")
def scenario(ls_api: LabelStudioAPI, synthetic, start_backend) -> Scenario:
    names = {c["id"]: c["name"] for c in synthetic.coco["categories"]}
    project = ls_api.create_project("ntt e2e", label_config(list(names.values())))["id"]
    tasks = ls_api.import_local_files(project, synthetic.images_dir, expected=len(synthetic.coco["images"]))
    task_of_image = {synthetic.image_for_task(t)["id"]: t["id"] for t in tasks}
    backend = start_backend("main")  # the default score threshold
    t0 = time.monotonic()
    ml = ls_api.connect_ml_backend(project, backend.url, title="ntt-label e2e")
    print(f"[e2e] connect: {time.monotonic() - t0:.2f} s", file=sys.stderr)
    return Scenario(ls_api, backend, project, ml, tasks, synthetic.coco, names, task_of_image)


def test_connect_creates_webhook_and_syncs_empty_project(scenario: Scenario):
    s = scenario
    assert s.ml["state"] == "CO", s.ml
    # engine id + memory revision + the thresholds' digest
    assert re.fullmatch(r"synthetic-[0-9a-f]+\.r\d+-[0-9a-f]{6}", s.ml["model_version"]), s.ml
    hooks = [h for h in s.api.list_webhooks(s.project) if h["url"].rstrip("/") == f"{s.backend.url}/webhook"]
    assert len(hooks) == 1 and hooks[0]["send_payload"] and hooks[0]["is_active"], hooks
    # with an API key, /setup syncs a project the backend has never seen (here: nothing to sync yet)
    m = wait_backend_idle(s.backend, lambda m: m["counters"].get("resyncs", 0) >= 1 and gauge_of(m, s.project),
                          "the first sync of the new project")
    gauge = gauge_of(m, s.project)
    assert gauge["annotations"] == 0 and sum(gauge["references"].values()) == 0, gauge
    s.initial_version = gauge["model_version"]
    assert s.ml["model_version"] == s.initial_version


def test_annotations_reach_the_memory_through_the_webhook(scenario: Scenario):
    s = scenario
    s.reference_images = pick_reference_images(s.coco, REFERENCES_PER_CLASS)
    before = backend_metrics(s.backend)
    t0 = time.monotonic()
    for image_id in s.reference_images:
        gt = [a for a in s.coco["annotations"] if a["image_id"] == image_id]
        result = [brush_result(mask_utils.decode(a["segmentation"]), s.names[a["category_id"]], i)
                  for i, a in enumerate(gt)]
        s.annotations[image_id] = s.api.create_annotation(s.task_of_image[image_id], result)
        s.regions[image_id] = len(result)
    created_s = time.monotonic() - t0
    n_regions = sum(s.regions.values())

    def applied(m: dict) -> bool:
        gauge = gauge_of(m, s.project)
        return gauge.get("annotations") == len(s.reference_images) and \
            sum(gauge.get("references", {}).values()) == n_regions

    m = wait_backend_idle(s.backend, applied, f"{len(s.reference_images)} annotations in the memory")
    print(f"[e2e] {len(s.reference_images)} annotations ({n_regions} regions) created in {created_s:.1f} s, "
          f"in the memory {time.monotonic() - t0:.1f} s after the first", file=sys.stderr)
    # they came by webhook (one ANNOTATION_CREATED each), not by a resync
    queued = m["counters"].get("events_queued_ANNOTATION_CREATED", 0) - \
        before["counters"].get("events_queued_ANNOTATION_CREATED", 0)
    assert queued == len(s.reference_images)
    assert m["counters"].get("resyncs", 0) == before["counters"].get("resyncs", 0)
    assert request_count(m, "/webhook", 200) >= len(s.reference_images)
    # reading the annotated tasks back must not make Label Studio call /predict (GET /api/tasks/<id>/ would)
    assert request_count(m, "/predict", 200) == request_count(before, "/predict", 200)
    gauge = gauge_of(m, s.project)
    per_label = defaultdict(int)
    for image_id in s.reference_images:
        for a in s.coco["annotations"]:
            if a["image_id"] == image_id:
                per_label[s.names[a["category_id"]]] += 1
    assert gauge["references"] == dict(per_label)
    s.version_after_refs = gauge["model_version"]
    assert s.version_after_refs != s.initial_version
    # Label Studio learns the new version at its next /setup
    assert ls_model_version(s.api, s.project, s.ml["id"]) == s.version_after_refs


def test_retrieve_predictions_under_new_model_version_reach_ap(scenario: Scenario):
    s = scenario
    t0 = time.monotonic()
    answer = s.api.retrieve_predictions(s.project)
    retrieve_s = time.monotonic() - t0
    print(f"[e2e] retrieve predictions for {len(s.tasks)} tasks: {retrieve_s:.1f} s -> {answer}", file=sys.stderr)
    predictions = [p for p in s.api.list_predictions(project=s.project) if p["model_version"] == s.version_after_refs]
    by_task = {p["task"]: p for p in predictions}
    assert set(by_task) == {t["id"] for t in s.tasks}, f"{len(by_task)} of {len(s.tasks)} tasks predicted"

    # one region per instance, in the most detailed control (brush), with valid labels and coordinates; a prediction
    # without any, the note saying so (Label Studio stores the TextArea result as given)
    labels = set(s.names.values())
    for p in predictions:
        kinds = defaultdict(int)
        for r in p["result"]:
            kinds[r["type"]] += 1
            value = r["value"]
            if r["type"] == "textarea":
                assert len(p["result"]) == 1 and "found no object" in value["text"][0], p["result"]
                continue
            assert value[r["type"]][0] in labels
            if r["type"] == "rectanglelabels":
                assert 0 <= value["x"] <= 100 and 0 <= value["y"] <= 100 and value["width"] > 0
            if r["type"] == "polygonlabels":
                assert len(value["points"]) >= 3
                assert all(0 <= x <= 100 and 0 <= y <= 100 for x, y in value["points"])
        assert set(kinds) <= {"brushlabels", "textarea"}, kinds

    # COCOeval segm on the images that are not references, from the brush RLE as Label Studio stores it
    category_of = {name: cid for cid, name in s.names.items()}
    eval_ids = sorted(i for i in s.task_of_image if i not in s.reference_images)
    gt = copy.deepcopy(s.coco)
    gt["images"] = [im for im in gt["images"] if im["id"] in eval_ids]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in eval_ids]
    detections = []
    for image_id in eval_ids:
        prediction = by_task[s.task_of_image[image_id]]
        for r in prediction["result"]:
            if r["type"] != "brushlabels":
                continue
            mask = decode_brush(r)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            detections.append({"image_id": image_id, "category_id": category_of[r["value"]["brushlabels"][0]],
                               "segmentation": rle, "score": float(r.get("score", prediction.get("score") or 0))})
    assert detections, "no brush region predicted at all"
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(detections)
    evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
    evaluator.params.imgIds = eval_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    ap, ap50 = float(evaluator.stats[0]), float(evaluator.stats[1])
    print(f"[e2e] COCOeval segm on {len(eval_ids)} images, {len(gt['annotations'])} GT instances, "
          f"{len(detections)} detections: AP {ap:.3f}, AP50 {ap50:.3f}", file=sys.stderr)
    assert ap >= AP_MIN, f"segm AP {ap:.3f} < {AP_MIN}"


def _brush_masks(prediction: dict) -> list[tuple[str, np.ndarray]]:
    return sorted(((r["value"]["brushlabels"][0], decode_brush(r)) for r in prediction["result"]
                   if r["type"] == "brushlabels"), key=lambda lm: (lm[0], int(lm[1].sum())))


def test_uploaded_image_is_read_through_the_api(scenario: Scenario, synthetic):
    """An uploaded file (/data/upload/...) is fetched from Label Studio with the PAT, and predicts like its
    local-file twin."""
    s = scenario
    image_id = next(i for i in sorted(s.task_of_image) if i not in s.reference_images
                    and len(synthetic.annotations_of(i)) >= 2)
    image = next(im for im in s.coco["images"] if im["id"] == image_id)
    before = {t["id"] for t in s.api.list_tasks(s.project)}
    with open(synthetic.images_dir / image["file_name"], "rb") as f:
        s.api.post(f"/api/projects/{s.project}/import", files={"file": (image["file_name"], f, "image/png")})
    new = [t for t in s.api.list_tasks(s.project) if t["id"] not in before]
    assert len(new) == 1 and new[0]["data"]["image"].startswith("/data/upload/"), new
    errors = backend_metrics(s.backend)["counters"].get("image_errors", 0)
    s.api.retrieve_predictions(s.project, [new[0]["id"]])
    uploaded = [p for p in s.api.list_predictions(task=new[0]["id"]) if p["model_version"] == s.version_after_refs]
    twin = [p for p in s.api.list_predictions(task=s.task_of_image[image_id])
            if p["model_version"] == s.version_after_refs]
    assert len(uploaded) == 1 and len(twin) == 1
    assert backend_metrics(s.backend)["counters"].get("image_errors", 0) == errors
    got, want = _brush_masks(uploaded[0]), _brush_masks(twin[0])
    assert len(got) == len(want) >= 2
    for (label_a, mask_a), (label_b, mask_b) in zip(got, want):
        assert label_a == label_b and np.array_equal(mask_a, mask_b)


def test_interactive_box_prompt(scenario: Scenario, synthetic):
    """A RectangleLabels box sent as smart-tool context comes back as the object's mask."""
    s = scenario
    image_id = next(i for i in sorted(s.task_of_image) if i not in s.reference_images and synthetic.annotations_of(i))
    target = max(synthetic.annotations_of(image_id), key=lambda a: a["area"])
    gt_mask = mask_utils.decode(target["segmentation"]).astype(bool)
    height, width = gt_mask.shape
    x, y, w, h = target["bbox"]
    label = s.names[target["category_id"]]
    context = {"result": [{"from_name": "rect", "to_name": "image", "type": "rectanglelabels",
                           "original_width": width, "original_height": height, "image_rotation": 0,
                           "value": {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width,
                                     "height": 100 * h / height, "rotation": 0, "rectanglelabels": [label]}}]}
    t0 = time.monotonic()
    answer = s.api.post(f"/api/ml/{s.ml['id']}/interactive-annotating",
                        {"task": s.task_of_image[image_id], "context": context})
    elapsed = time.monotonic() - t0
    brushes = [r for r in (answer.get("data") or {}).get("result", []) if r["type"] == "brushlabels"]
    assert brushes, answer
    mask = decode_brush(brushes[0])
    iou = (mask & gt_mask).sum() / max(1, (mask | gt_mask).sum())
    print(f"[e2e] interactive box prompt: IoU {iou:.3f} in {elapsed:.2f} s", file=sys.stderr)
    assert brushes[0]["value"]["brushlabels"] == [label]
    assert iou >= 0.8


def test_deleting_an_annotation_removes_its_references(scenario: Scenario):
    s = scenario
    image_id = max(s.reference_images, key=lambda i: s.regions[i])  # the one with the most regions
    before = wait_backend_idle(s.backend, lambda m: True, "an idle worker")
    gauge_before = gauge_of(before, s.project)
    s.api.delete_annotation(s.annotations[image_id]["id"])
    removed = s.regions[image_id]

    def applied(m: dict) -> bool:
        gauge = gauge_of(m, s.project)
        return gauge.get("annotations") == gauge_before["annotations"] - 1

    m = wait_backend_idle(s.backend, applied, "the deleted annotation to leave the memory")
    gauge = gauge_of(m, s.project)
    assert m["counters"].get("events_queued_ANNOTATIONS_DELETED", 0) >= 1
    assert sum(gauge["references"].values()) == sum(gauge_before["references"].values()) - removed
    assert gauge["model_version"] != s.version_after_refs
    assert ls_model_version(s.api, s.project, s.ml["id"]) == gauge["model_version"]
    # and "Retrieve predictions" predicts again, under the new version
    task = s.task_of_image[image_id]
    older = [p for p in s.api.list_predictions(task=task) if p["model_version"] == s.version_after_refs]
    s.api.retrieve_predictions(s.project, [task])
    versions = [p["model_version"] for p in s.api.list_predictions(task=task)
                if p["model_version"].startswith(gauge["model_version"].rsplit(".r", 1)[0] + ".")]
    # the task has no annotation any more: the older prediction of this backend was archived (kept, for an editor
    # that may hold it open) before the new one landed, so the task holds one live prediction
    engine = gauge["model_version"].rsplit(".r", 1)[0]
    assert older and sorted(versions) == sorted([engine + ".archived", gauge["model_version"]]), versions


def test_polygon_annotation_and_update(scenario: Scenario):
    """A PolygonLabels annotation becomes references too, and updating it replaces them."""
    s = scenario
    image_id = next(i for i in sorted(s.task_of_image) if i not in s.reference_images
                    and len([a for a in s.coco["annotations"] if a["image_id"] == i]) >= 2)
    gt = [a for a in s.coco["annotations"] if a["image_id"] == image_id]
    before = gauge_of(wait_backend_idle(s.backend, lambda m: True, "an idle worker"), s.project)
    results = [polygon_result(mask_utils.decode(a["segmentation"]), s.names[a["category_id"]], i)
               for i, a in enumerate(gt)]
    annotation = s.api.create_annotation(s.task_of_image[image_id], results)
    m = wait_backend_idle(s.backend, lambda m: gauge_of(m, s.project).get("annotations") == before["annotations"] + 1,
                          "the polygon annotation in the memory")
    after_create = gauge_of(m, s.project)
    assert sum(after_create["references"].values()) == sum(before["references"].values()) + len(gt)
    s.api.update_annotation(annotation["id"], results[:1])
    m = wait_backend_idle(s.backend, lambda m: sum(gauge_of(m, s.project).get("references", {}).values())
                          == sum(before["references"].values()) + 1, "the updated annotation in the memory")
    assert gauge_of(m, s.project)["model_version"] != after_create["model_version"]


def test_skipped_and_empty_annotations_and_start_training(scenario: Scenario):
    """A cancelled (skipped) annotation changes nothing; an empty one marks its image as a negative; "Start
    training" (START_TRAINING webhook) resyncs the project from the API without changing a settled memory."""
    s = scenario
    negatives = s.coco["info"]["generator"]["negative_image_ids"]  # images with no object of any class
    assert len(negatives) >= 2
    before_m = wait_backend_idle(s.backend, lambda m: True, "an idle worker")
    before = gauge_of(before_m, s.project)
    skipped = s.api.create_annotation(s.task_of_image[negatives[0]], [], was_cancelled=True)
    assert skipped["was_cancelled"] is True
    s.api.create_annotation(s.task_of_image[negatives[1]], [])
    m = wait_backend_idle(s.backend, lambda m: gauge_of(m, s.project).get("negative_images", 0)
                          == before.get("negative_images", 0) + 1, "the empty annotation as a negative image")
    gauge = gauge_of(m, s.project)
    assert gauge["references"] == before["references"]
    queued = sum(v for k, v in m["counters"].items() if k.startswith("events_queued_ANNOTATION")) - \
        sum(v for k, v in before_m["counters"].items() if k.startswith("events_queued_ANNOTATION"))
    assert queued == 2  # both webhooks arrived; the skipped one was applied as "no change"
    version = gauge["model_version"]

    s.api.train(s.ml["id"])
    m = wait_backend_idle(s.backend, lambda m: m["counters"].get("resyncs", 0) > before_m["counters"].get("resyncs", 0),
                          "the resync after Start training")
    assert m["counters"].get("events_queued_START_TRAINING", 0) >= 1
    after = gauge_of(m, s.project)
    assert after["references"] == gauge["references"] and after["model_version"] == version


# ---------------------------------------------------------------------------------------------------- basic auth

AUTH_USER, AUTH_PASS = "mluser", "ml-pass-123"


def _auth_project(api: LabelStudioAPI, synthetic, title: str) -> tuple[int, list[dict]]:
    project = api.create_project(title, label_config([c["name"] for c in synthetic.coco["categories"]]))["id"]
    tasks = api.import_local_files(project, synthetic.images_dir, expected=len(synthetic.coco["images"]))
    return project, tasks


def _first_annotation(synthetic, tasks: list[dict], offset: int = 0) -> tuple[int, list[dict]]:
    """A task with at least one object, and brush results for all of them."""
    names = {c["id"]: c["name"] for c in synthetic.coco["categories"]}
    candidates = [t for t in tasks if synthetic.annotations_of(synthetic.image_for_task(t)["id"])]
    task = candidates[offset]
    gt = synthetic.annotations_of(synthetic.image_for_task(task)["id"])
    return task["id"], [brush_result(mask_utils.decode(a["segmentation"]), names[a["category_id"]], i)
                        for i, a in enumerate(gt)]


def test_basic_auth_with_api_key_webhook_needs_no_credentials(ls_api: LabelStudioAPI, synthetic, start_backend):
    backend = start_backend("auth-key", BASIC_AUTH_USER=AUTH_USER, BASIC_AUTH_PASS=AUTH_PASS)
    # every route but /health (and /webhook, whose payload is never trusted with an API key) needs credentials
    assert requests.get(f"{backend.url}/health", timeout=10).status_code == 200
    assert requests.get(f"{backend.url}/metrics", timeout=10).status_code == 401
    assert requests.post(f"{backend.url}/predict", json={"tasks": []}, timeout=10).status_code == 401
    project, tasks = _auth_project(ls_api, synthetic, "ntt e2e basic auth + key")
    ml = ls_api.connect_ml_backend(project, backend.url, title="ntt auth key", auth_method="BASIC_AUTH",
                                   basic_auth_user=AUTH_USER, basic_auth_pass=AUTH_PASS)
    assert ml["state"] == "CO", ml
    hook = next(h for h in ls_api.list_webhooks(project) if h["url"].startswith(backend.url))
    assert not hook.get("headers"), hook  # Label Studio's auto-created webhook carries no credentials
    wait_backend_idle(backend, lambda m: m["counters"].get("resyncs", 0) >= 1, "the first sync")
    task, result = _first_annotation(synthetic, tasks)
    ls_api.create_annotation(task, result)
    m = wait_backend_idle(backend, lambda m: gauge_of(m, project).get("annotations") == 1,
                          "the annotation in the memory through the credential-less webhook")
    assert sum(gauge_of(m, project)["references"].values()) == len(result)
    assert request_count(m, "/webhook", 401) == 0
    assert m["counters"].get("events_queued_ANNOTATION_CREATED", 0) == 1


def test_basic_auth_without_api_key_refuses_webhook_until_header_added(ls_api: LabelStudioAPI, synthetic,
                                                                        start_backend):
    backend = start_backend("auth-nokey", api_key=False, BASIC_AUTH_USER=AUTH_USER, BASIC_AUTH_PASS=AUTH_PASS)
    project, tasks = _auth_project(ls_api, synthetic, "ntt e2e basic auth, no key")
    ml = ls_api.connect_ml_backend(project, backend.url, title="ntt auth no key", auth_method="BASIC_AUTH",
                                   basic_auth_user=AUTH_USER, basic_auth_pass=AUTH_PASS)
    assert ml["state"] == "CO", ml
    hook = next(h for h in ls_api.list_webhooks(project) if h["url"].startswith(backend.url))

    task, result = _first_annotation(synthetic, tasks)
    ls_api.create_annotation(task, result)  # LS delivers webhooks synchronously: done when this returns
    m = wait_backend_idle(backend, lambda m: request_count(m, "/webhook", 401) >= 1, "the refused webhook")
    assert sum(gauge_of(m, project).get("references", {}).values()) == 0
    assert m["counters"].get("events_queued_ANNOTATION_CREATED", 0) == 0

    # the README's fix: give the webhook the backend's credentials
    ls_api.update_webhook(hook["id"], headers={"Authorization": basic_header(AUTH_USER, AUTH_PASS)})
    task2, result2 = _first_annotation(synthetic, tasks, offset=1)
    ls_api.create_annotation(task2, result2)
    m = wait_backend_idle(backend, lambda m: gauge_of(m, project).get("annotations") == 1,
                          "the annotation in the memory through the webhook with credentials")
    # without an API key the payload is used as it is: only the second annotation (the first was refused)
    assert sum(gauge_of(m, project)["references"].values()) == len(result2)


# ---------------------------------------------------------------------------------------------------- gunicorn


def test_gunicorn_workers_share_the_memory(ls_api: LabelStudioAPI, synthetic, start_backend):
    """As in the Docker image: gunicorn with 2 worker processes. A webhook lands in one worker, /setup and /predict
    in any: each worker sees the other's memory revision (file + revision check) and predicts under it."""
    backend = start_backend("gunicorn", gunicorn_workers=2, THREADS="4")
    project, tasks = _auth_project(ls_api, synthetic, "ntt e2e gunicorn")
    ml = ls_api.connect_ml_backend(project, backend.url, title="ntt gunicorn")
    assert ml["state"] == "CO", ml
    # MODEL_DIR state is shared: any worker's /metrics reports the project's revision from disk
    wait_until(lambda: (g := project_gauge(backend, project)) is not None and g["revision"] is not None, WAIT_S,
               what="the project in MODEL_DIR")
    n_refs = 0
    for offset in range(3):
        task, result = _first_annotation(synthetic, tasks, offset=offset)
        ls_api.create_annotation(task, result)
        n_refs += len(result)

    def settled():
        gauges = [project_gauge(backend, project) for _ in range(6)]  # several requests: both workers answer
        ok = all(g and g["annotations"] == 3 and sum(g["references"].values()) == n_refs for g in gauges)
        return gauges[0] if ok and len({g["model_version"] for g in gauges}) == 1 else None

    gauge = wait_until(settled, WAIT_S, what="both workers to see the 3 annotations", proc=backend.proc,
                       log=backend.log_path)
    version = ls_model_version(ls_api, project, ml["id"])
    assert version == gauge["model_version"]
    ls_api.retrieve_predictions(project, [t["id"] for t in tasks[:8]])
    predictions = [p for p in ls_api.list_predictions(project=project) if p["task"] in {t["id"] for t in tasks[:8]}]
    current = [p for p in predictions if p["model_version"] == version]
    assert len(current) == 8, [(p["task"], p["model_version"]) for p in predictions]
    assert sum(len(p["result"]) for p in current) > 0
