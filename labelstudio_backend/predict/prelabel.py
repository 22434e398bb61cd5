"""Bulk pre-labelling of a whole project through the Label Studio API, for projects too big for "Retrieve
predictions" (which Label Studio runs synchronously with a 100 s timeout).

Order (`order`): "id" (Label Studio's sequential order), or "useful": the tasks that are most useful to label
first: unlabelled before labelled; among them those never predicted by this engine (unknown to the memory), then by
the score of this engine's latest prediction on them, lowest first (the memory's certainty about the image, task_score.py): with a `limit`, the most
useful tasks get their predictions first.

Like the background refresh (refresher.py), an unlabelled task's stale prediction of this engine is replaced in
place; labelled tasks get a new prediction and keep their old ones (annotations may name them as their parent).

Resumable: only tasks without a prediction of the current model_version are predicted, and each prediction is
uploaded (POST /api/predictions/) as soon as it is made, so an interrupted run continues where it stopped. Tasks
whose image cannot be read are reported and left for the next run. With `use_ray`, Ray actors (one engine each)
predict batches; the memory travels once through the object store.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from tqdm import tqdm

from labelstudio_backend.fetch.images import ImageFetchError
from labelstudio_backend.labelstudio.label_config import LabelConfig, parse_label_config
from labelstudio_backend.learn.corrections import own_version_pattern
from labelstudio_backend.learn.sync import Synchronizer
from labelstudio_backend.predict.predictor import Predictor
from labelstudio_backend.predict.thresholds import project_thresholds, project_version
from labelstudio_backend.runtime import Runtime
from labelstudio_backend.settings import Settings
from labelstudio_backend.store.projects import ProjectSnapshot, ProjectState
from ntt_engine import MemoryBank

log = logging.getLogger(__name__)

ORDERS = ("id", "useful")


@dataclass
class PrelabelStats:
    tasks: int = 0
    already_current: int = 0
    predicted: int = 0
    uploaded: int = 0
    replaced: int = 0  # of the uploaded: an own stale prediction of an unlabelled task replaced in place
    failed: int = 0
    model_version: str = ""
    errors: list[str] = field(default_factory=list)


def _lean(task: dict) -> dict:
    """Only what prediction needs: keeps a big project's task list small."""
    return {"id": task.get("id"), "data": task.get("data"), "project": task.get("project")}


def _last_own_score(predictions: list[dict], own) -> float | None:
    mine = [p for p in predictions if own.match(str(p.get("model_version", ""))) and
            isinstance(p.get("score"), (int, float))]
    return float(max(mine, key=lambda p: p.get("id") or 0)["score"]) if mine else None


def _batches(items: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_batch(runtime: Runtime, snap: ProjectSnapshot, config: LabelConfig, tasks: list[dict]
                  ) -> list[tuple[int, dict | None, str | None]]:
    """(task id, prediction or None, error) per task."""
    engine = runtime.engine()
    predictor = Predictor(runtime)
    version = project_version(engine, snap, runtime.settings)
    thresholds = project_thresholds(snap.state, runtime.settings.score_threshold)
    out = []
    for task in tasks:
        try:
            out.append((task["id"], predictor.predict_task(engine, snap, config, task, thresholds, version,
                                                           strict=True), None))
        except ImageFetchError as exc:
            out.append((task["id"], None, str(exc)))
    return out


def prelabel(settings: Settings, project_id: int, batch_size: int = 8, use_ray: bool = False,
             ray_address: str | None = None, actors: int | None = None, limit: int | None = None,
             sync: bool = True, progress: bool = True, runtime: Runtime | None = None, order: str = "id"
             ) -> PrelabelStats:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    rt = runtime or Runtime(settings.replace(preload=False))
    if rt.api is None:
        raise SystemExit("prelabel needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a personal access token)")
    project = rt.api.get_project(project_id)
    if project is None:
        raise SystemExit(f"project {project_id} is not in Label Studio at {settings.label_studio_url}")
    config = parse_label_config(project.get("label_config", ""))
    if sync:  # incremental: only annotations changed since the last sync are recomputed
        Synchronizer(rt).resync(project_id)
    snap = rt.store.snapshot(project_id)
    if not snap.state.label_config:
        snap = ProjectSnapshot(ProjectState(project_id, label_config=config.xml,
                                            score_threshold=snap.state.score_threshold), snap.memory)
    version = project_version(rt.engine(), snap, rt.settings)
    stats = PrelabelStats(model_version=version)
    if len(snap.memory) == 0:
        log.warning("project %d has no references yet: label a few images first", project_id)

    todo, stale = _select_tasks(rt, project_id, version, order, limit, stats)
    log.info("project %d: %d task(s), %d already predicted by %s, %d to do", project_id, stats.tasks,
             stats.already_current, version, len(todo))

    bar = tqdm(total=len(todo), desc=f"prelabel project {project_id}", unit="task", disable=not progress)
    batches = list(_batches(todo, max(1, batch_size)))
    results = _ray_results(settings, snap, config, batches, ray_address, actors) if use_ray else \
        (predict_batch(rt, snap, config, batch) for batch in batches)
    for batch_results in results:
        for task_id, prediction, error in batch_results:
            bar.update(1)
            if prediction is None:
                stats.failed += 1
                stats.errors.append(f"task {task_id}: {error}")
                log.error("task %s: %s (left for the next run)", task_id, error)
                continue
            stats.predicted += 1
            _upload(rt, task_id, prediction, stale.get(task_id) or [], stats)
            stats.uploaded += 1
    bar.close()
    return stats


def _select_tasks(rt: Runtime, project_id: int, version: str, order: str, limit: int | None,
                  stats: PrelabelStats) -> tuple[list[dict], dict[int, list[dict]]]:
    """The tasks to predict (none already at `version`), in `order`, and per unlabelled task this engine's stale
    predictions to replace."""
    todo: list[dict] = []
    certainty: dict = {}
    stale: dict[int, list[dict]] = {}
    own = own_version_pattern(rt.engine())
    for task in rt.api.iter_tasks(project_id):
        stats.tasks += 1
        predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
        if any(p.get("model_version") == version for p in predictions):
            stats.already_current += 1
            continue
        todo.append(_lean(task))
        labelled = bool(task.get("total_annotations") or task.get("annotations") or task.get("cancelled_annotations"))
        certainty[task.get("id")] = (labelled, _last_own_score(predictions, own))
        if not labelled:  # as the refresh does: an unlabelled task's own stale predictions are replaced
            stale[task.get("id")] = sorted((p for p in predictions if isinstance(p.get("id"), int) and
                                            own.match(str(p.get("model_version", "")))), key=lambda p: p["id"])
        if order == "id" and limit is not None and len(todo) >= limit:
            break
    if order == "useful":  # unlabelled first; among them never predicted (None), then the least certain
        todo.sort(key=lambda t: (certainty[t["id"]][0], certainty[t["id"]][1] is not None,
                                 certainty[t["id"]][1] or 0.0, t["id"] or 0))
        todo = todo[:limit] if limit is not None else todo
    return todo, stale


def _upload(rt: Runtime, task_id: int, prediction: dict, mine: list[dict], stats: PrelabelStats) -> None:
    """The newest own stale prediction of an unlabelled task is replaced in place (its id stays valid for an open
    editor), older own ones are deleted; otherwise a new prediction."""
    args = (prediction["result"], prediction["score"], prediction["model_version"])
    if mine and rt.api.update_prediction(mine[-1]["id"], *args) is not None:
        stats.replaced += 1
        for older in mine[:-1]:
            rt.api.delete_prediction(older["id"])
        return
    rt.api.create_prediction(task_id, *args)


def _ray_results(settings: Settings, snap: ProjectSnapshot, config: LabelConfig, batches: list[list[dict]],
                 address: str | None, actors: int | None) -> Iterator[list[tuple[int, dict | None, str | None]]]:
    import ray
    from ray.util import ActorPool

    started_here = not ray.is_initialized()
    if started_here:
        # an explicit address, else RAY_ADDRESS, else a private local instance (never some cluster that happens to
        # run on this machine)
        ray.init(address=address or (None if os.environ.get("RAY_ADDRESS") else "local"), log_to_driver=False)
    count = actors or max(1, min(len(batches), int(ray.available_resources().get("GPU", 0)) or 1))
    memory_ref = ray.put(snap.memory.to_bytes())
    gpus = 1 if ray.available_resources().get("GPU", 0) >= count else 0

    @ray.remote(num_gpus=gpus)
    class PrelabelActor:
        def __init__(self, settings: Settings, state: ProjectState, memory_bytes: bytes, xml: str):
            self.rt = Runtime(settings.replace(preload=False))
            memory = self.rt.engine().adopt_memory(MemoryBank.from_bytes(memory_bytes))
            self.snap = ProjectSnapshot(state, memory)
            self.config = parse_label_config(xml)

        def predict(self, tasks: list[dict]) -> list[Any]:
            return predict_batch(self.rt, self.snap, self.config, tasks)

    pool = ActorPool([PrelabelActor.remote(settings, snap.state, memory_ref, config.xml) for _ in range(count)])
    try:
        yield from pool.map_unordered(lambda actor, batch: actor.predict.remote(batch), batches)
    finally:
        if started_here:
            ray.shutdown()
