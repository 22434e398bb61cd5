"""Test data helpers: the label config, the synthetic dataset wrapper, Label-Studio-shaped annotations, tasks and
webhook payloads built from the real Label Studio 1.23.2 samples in tests/backend/samples/."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelstudio_backend.labelstudio.regions import (decode_brush, encode_brush, mask_to_polygons_percent, polygon_to_mask,
                                         rectangle_to_box)
from ntt_engine.export import rle_to_mask

SAMPLES = Path(__file__).parents[1] / "backend" / "samples"
PROJECT = 4  # the project id in the recorded samples
WIDTH, HEIGHT = 160, 120

LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="brush" toName="image">
    <Label value="red_stripes" background="red"/><Label value="green_checker" background="green"/>
  </BrushLabels>
  <PolygonLabels name="poly" toName="image">
    <Label value="red_stripes"/><Label value="green_checker"/>
  </PolygonLabels>
  <RectangleLabels name="rect" toName="image">
    <Label value="red_stripes"/><Label value="green_checker"/>
  </RectangleLabels>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="red_stripes"/><Label value="green_checker"/>
  </KeyPointLabels>
</View>"""


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


@dataclass
class Dataset:
    root: Path  # the document root; images live in root/images
    coco: dict

    def url(self, image_id: int) -> str:
        return f"/data/local-files/?d=images/{image_id:06d}.png"

    def instances(self, image_id: int) -> list[tuple[str, np.ndarray]]:
        names = {c["id"]: c["name"] for c in self.coco["categories"]}
        return [(names[a["category_id"]], rle_to_mask(a["segmentation"]))
                for a in self.coco["annotations"] if a["image_id"] == image_id]

    def positive_ids(self) -> list[int]:
        return sorted({a["image_id"] for a in self.coco["annotations"]})

    def negative_ids(self) -> list[int]:
        return sorted(set(range(1, len(self.coco["images"]) + 1)) - set(self.positive_ids()))


# ------------------------------------------------------------------------------------------------ LS-shaped data
def region_for(kind: str, label: str, mask: np.ndarray) -> list[dict]:
    """Label Studio annotation regions for one GT mask, as the editor would store them."""
    height, width = mask.shape
    base = {"to_name": "image", "original_width": width, "original_height": height, "image_rotation": 0}
    if kind == "brush":
        return [{**base, "from_name": "brush", "type": "brushlabels",
                 "value": {"format": "rle", "rle": encode_brush(mask), "brushlabels": [label]}}]
    if kind == "poly":
        return [{**base, "from_name": "poly", "type": "polygonlabels",
                 "value": {"points": points, "closed": True, "polygonlabels": [label]}}
                for points in mask_to_polygons_percent(mask)[:1]]
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [{**base, "from_name": "rect", "type": "rectanglelabels",
             "value": {"x": x0 * 100 / width, "y": y0 * 100 / height, "width": (x1 - x0) * 100 / width,
                       "height": (y1 - y0) * 100 / height, "rotation": 0, "rectanglelabels": [label]}}]


def annotation_result(dataset: Dataset, image_id: int, kind: str = "brush") -> list[dict]:
    result = []
    for label, mask in dataset.instances(image_id):
        result += region_for(kind, label, mask)
    return result


def created_webhook(dataset: Dataset, annotation_id: int, image_id: int, result: list[dict],
                    action: str = "ANNOTATION_CREATED", project: int = 4, cancelled: bool = False,
                    label_config: str = LABEL_CONFIG) -> dict:
    """The real ANNOTATION_CREATED sample from Label Studio 1.23.2, pointed at a synthetic image."""
    payload = copy.deepcopy(sample("webhook_ANNOTATION_CREATED"))
    payload["action"] = action
    payload["annotation"].update(id=annotation_id, task=100 + image_id, result=result, was_cancelled=cancelled,
                                 project=project, updated_at=f"2026-11-25T13:54:{annotation_id % 60:02d}Z")
    payload["task"].update(id=100 + image_id, project=project, data={"image": dataset.url(image_id)})
    payload["project"].update(id=project, label_config=label_config)
    return payload


def task_for(dataset: Dataset, image_id: int, project: int = 4) -> dict:
    """A task shaped like those in the real predict_batch sample."""
    task = copy.deepcopy(sample("predict_batch_from_LS")["tasks"][1])
    task.update(id=100 + image_id, project=project, data={"image": dataset.url(image_id)})
    return task


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# ------------------------------------------------------------------------------------------------ protocol helpers
def setup(client, **extra) -> str:
    body = sample("setup_from_LS")
    body["schema"] = LABEL_CONFIG
    body.update(extra)
    response = client.post("/setup", json=body)
    assert response.status_code == 200, response.json
    return response.json["model_version"]


def send(app, client, payload) -> None:
    response = client.post("/webhook", json=payload)
    assert response.status_code == 200, response.json
    assert app.extensions["ntt"].worker.wait_idle(60)


def snap(app, project=PROJECT):
    return app.extensions["ntt"].runtime.store.snapshot(project)


def predict(client, tasks, context=None, label_config=LABEL_CONFIG):
    body = sample("predict_batch_from_LS")
    body.update(tasks=tasks, label_config=label_config)
    body["params"]["context"] = context
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.json
    return response.json["results"]


def learn(app, client, dataset, kinds=("brush", "poly", "rect", "brush")) -> list[int]:
    """Annotate the first positive images, one annotation each, and return their image ids."""
    images = dataset.positive_ids()[: len(kinds)]
    for n, (image_id, kind) in enumerate(zip(images, kinds)):
        send(app, client, created_webhook(dataset, 10 + n, image_id, annotation_result(dataset, image_id, kind)))
    return images


def decode(region) -> np.ndarray:
    width, height, value = region["original_width"], region["original_height"], region["value"]
    if region["type"] == "brushlabels":
        return decode_brush(value["rle"], width, height)
    if region["type"] == "polygonlabels":
        return polygon_to_mask(value["points"], width, height)
    x0, y0, x1, y1 = (int(round(v)) for v in rectangle_to_box(value, width, height))
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def best_ious(dataset, image_id, result, kind) -> list[float]:
    """Per GT instance, the best IoU with a predicted region of `kind` and the same label."""
    regions = [r for r in result if r["type"] == kind]
    scores = []
    for label, gt in dataset.instances(image_id):
        if kind == "rectanglelabels":
            ys, xs = np.nonzero(gt)
            gt = np.zeros_like(gt)
            gt[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        scores.append(max([iou(decode(r), gt) for r in regions if r["value"][kind] == [label]], default=0.0))
    return scores


def inside_point(mask) -> tuple[float, float]:
    """A pixel centre well inside the mask, in percent."""
    ys, xs = np.nonzero(mask)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    height, width = mask.shape
    return (xs[k] + 0.5) * 100 / width, (ys[k] + 0.5) * 100 / height
