"""An in-memory stand-in for the Label Studio API calls the backend makes (the e2e tests use the real server)."""
from __future__ import annotations

import copy
import itertools

from labelstudio_backend.labelstudio.client import LabelStudioAPI

from support.backend_helpers import LABEL_CONFIG, Dataset


class FakeLabelStudio(LabelStudioAPI):
    def __init__(self, dataset: Dataset, project: int = 4, label_config: str = LABEL_CONFIG):
        super().__init__("http://ls.test:8080", "legacy-token")
        self.dataset = dataset
        self.projects = {project: {"id": project, "label_config": label_config}}
        self.tasks: dict[int, dict] = {}
        self.annotations: dict[int, dict] = {}
        self.predictions: list[dict] = []
        self.calls: list[str] = []
        self._clock = itertools.count(1)

    # ----- building the fake project -----
    def add_task(self, image_id: int, project: int = 4, url: str | None = None) -> int:
        task_id = 100 + image_id
        self.tasks[task_id] = {"id": task_id, "project": project, "data": {"image": url or self.dataset.url(image_id)},
                               "predictions": []}
        return task_id

    def annotate(self, annotation_id: int, task_id: int, result: list, cancelled: bool = False) -> dict:
        annotation = {"id": annotation_id, "task": task_id, "project": self.tasks[task_id]["project"],
                      "result": result, "was_cancelled": cancelled,
                      "updated_at": f"2026-11-25T14:00:{next(self._clock):02d}Z"}
        self.annotations[annotation_id] = annotation
        return annotation

    # ----- the API -----
    def auth_headers(self, force_refresh: bool = False) -> dict[str, str]:
        return {"Authorization": "Token legacy-token"}

    def get_annotation(self, annotation_id):
        self.calls.append(f"annotation {annotation_id}")
        return copy.deepcopy(self.annotations.get(annotation_id))

    def get_task(self, task_id, project_id=None):
        self.calls.append(f"task {task_id}")
        task = self.tasks.get(task_id)
        if task is None:
            return None
        mine = [a for a in self.annotations.values() if a["task"] == task_id]
        return {**copy.deepcopy(task), "total_annotations": sum(not a["was_cancelled"] for a in mine),
                "cancelled_annotations": sum(bool(a["was_cancelled"]) for a in mine)}

    def get_project(self, project_id):
        self.calls.append(f"project {project_id}")
        return copy.deepcopy(self.projects.get(project_id))

    def task_annotations(self, task_id):
        return [copy.deepcopy(a) for a in self.annotations.values() if a["task"] == task_id]

    def iter_tasks(self, project_id, page_size=100):
        self.calls.append(f"tasks of {project_id}")
        for task in self.tasks.values():
            if task["project"] == project_id:
                yield {**copy.deepcopy(task), "annotations": self.task_annotations(task["id"])}

    def create_prediction(self, task_id, result, score, model_version):
        prediction = {"id": len(self.predictions) + 1000, "task": task_id, "result": result, "score": score,
                      "model_version": model_version}
        self.predictions.append(prediction)
        self.tasks[task_id]["predictions"].append(prediction)
        return prediction

    def get_prediction(self, prediction_id):
        return copy.deepcopy(next((p for p in self.predictions if p.get("id") == prediction_id), None))

    def update_prediction(self, prediction_id, result, score, model_version):
        self.calls.append(f"update prediction {prediction_id}")
        prediction = next((p for p in self.predictions if p.get("id") == prediction_id), None)
        if prediction is not None:
            prediction.update(result=result, score=score, model_version=model_version)
        return copy.deepcopy(prediction)

    def relabel_prediction(self, prediction_id, model_version):
        self.calls.append(f"relabel prediction {prediction_id} {model_version}")
        prediction = next((p for p in self.predictions if p.get("id") == prediction_id), None)
        if prediction is not None:
            prediction["model_version"] = model_version
        return copy.deepcopy(prediction)

    def model_versions(self, project_id):
        self.calls.append(f"model versions of {project_id}")
        counts: dict[str, int] = {}
        for prediction in self.predictions:
            if self.tasks.get(prediction["task"], {}).get("project") == project_id:
                counts[prediction["model_version"]] = counts.get(prediction["model_version"], 0) + 1
        return counts

    def delete_prediction(self, prediction_id):
        self.calls.append(f"delete prediction {prediction_id}")
        self.predictions = [p for p in self.predictions if p.get("id") != prediction_id]
        for task in self.tasks.values():
            task["predictions"] = [p for p in task["predictions"] if p.get("id") != prediction_id]

    def unlabelled_tasks(self, project_id, limit):
        self.calls.append(f"unlabelled tasks of {project_id}")
        labelled = {a["task"] for a in self.annotations.values()}
        return [copy.deepcopy(t) for t in sorted(self.tasks.values(), key=lambda t: t["id"])
                if t["project"] == project_id and t["id"] not in labelled][:limit]
