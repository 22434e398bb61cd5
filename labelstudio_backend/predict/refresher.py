"""After every memory change, bring the predictions of the tasks annotators open next up to the new model_version.

Why: Label Studio asks /predict only for a task without a prediction of the current version in the label stream,
and, when a task is opened from the Data Manager, only for a task without any prediction at all; so an
already-predicted task shows its old prediction there until someone runs "Retrieve predictions".

What (API mode only, one background thread per process, bounded):
- the first NTT_REFRESH_TASKS tasks nobody has annotated or skipped, by id (the order of Label Studio's sequential
  label stream; with uncertainty or random sampling the stream picks among the same tasks);
- a task that already has a prediction of the current version keeps it (older own versions are archived);
- else the newest of *this backend's own* predictions on it (this engine's id, any revision) is
  replaced in place (PATCH: its id stays, so an annotator who has the task open can still submit, since the
  submit names that id as parent_prediction), older own ones are archived (relabelled `<engine id>.archived`, not
  deleted: an editor may hold one open, and its submit names it), and a task without one gets a new one;
- predictions of other models are never touched, nor tasks with annotations, but for the version label of this
  backend's superseded predictions, relabelled to `<engine id>.archived` after each complete pass so that Label
  Studio's version lists stay short (predict/archive.py; the prediction, its id and parent links stay);
- a pass starts START_DELAY_S after the project's last change, so the task Label Studio serves right after a submit
  is predicted by Label Studio's own /setup + /predict (which hold the refresh off), not by both;
- a newer memory change restarts the pass from the first task; while Label Studio runs a /predict of the project
  (in any process: marker files), the pass waits and starts over, since Label Studio stores that request's
  predictions itself; a prediction computed while such a /predict began is not written (checked just before the
  write); two own predictions of the current version on a task (a race left in that last window) keep the newest.
Several processes of one MODEL_DIR: one refreshes a project at a time (a file lock); the others skip.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

from filelock import FileLock, Timeout

from labelstudio_backend.fetch.images import ImageFetchError
from labelstudio_backend.labelstudio.client import LabelStudioAPIError
from labelstudio_backend.labelstudio.ids import integer_id
from labelstudio_backend.labelstudio.label_config import LabelConfigError
from labelstudio_backend.learn.corrections import own_version_pattern
from labelstudio_backend.predict.archive import VersionArchive
from labelstudio_backend.predict.predictor import Predictor
from labelstudio_backend.predict.stale import archive_predictions, live_predictions, unannotated
from labelstudio_backend.predict.thresholds import project_thresholds, project_version
from labelstudio_backend.runtime import EngineUnavailable, Runtime
from labelstudio_backend.store.in_flight import PredictsInFlight
from labelstudio_backend.store.versions import archive_version

log = logging.getLogger(__name__)

PREDICT_WAIT_S = 120.0  # at most this long for /predict requests of the project to finish before a pass
# a pass starts this long after the project's last change: Label Studio serves the next task of the label stream about
# 1 s after a submit (its /setup then holds the refresh off until its own /predict is stored), and bursts coalesce
START_DELAY_S = 2.0
# why a pass stops early (its log line says which)
NEWER_MEMORY = "a newer memory change arrived; starting over"
LS_PREDICTING = "Label Studio was predicting tasks of the project (it stores those itself); starting over after it"
NOTHING_LEARNT = "the memory is empty: nothing to predict"


@dataclass
class RefreshStats:
    project: int
    model_version: str = ""
    tasks: int = 0
    current: int = 0  # already carried a prediction of this version
    updated: int = 0  # own stale prediction replaced in place
    created: int = 0
    archived: int = 0  # older own duplicates, relabelled to the archive version
    failed: int = 0
    stopped: str = ""  # why the pass ended before its last task ("" when it went through)


class Refresher:
    def __init__(self, runtime: Runtime, predictor: Predictor, max_tasks: int, predicts: PredictsInFlight):
        self.rt = runtime
        self.predictor = predictor
        self.max_tasks = max_tasks
        self.predicts = predicts
        self.archive = VersionArchive()
        self._wanted: list[int] = []
        self._due: dict[int, float] = {}  # project -> monotonic time its pass may start
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._running = False

    @property
    def enabled(self) -> bool:
        return self.rt.api is not None and self.max_tasks > 0

    def start(self) -> None:
        if self.enabled and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._run, name="ntt-refresher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def notify(self, project: int) -> None:
        """The memory of `project` changed: refresh it (again) soon. Never blocks."""
        if not self.enabled:
            return
        with self._condition:
            if project not in self._wanted:
                self._wanted.append(project)
            self._due[project] = time.monotonic() + START_DELAY_S
            self._condition.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once nothing is waiting (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._condition:
                if not self._wanted and not self._running:
                    return True
            time.sleep(0.05)
        return False

    def _superseded(self, project: int) -> bool:
        with self._condition:
            return project in self._wanted

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopping:
                    now = time.monotonic()
                    ready = [p for p in self._wanted if self._due.get(p, 0.0) <= now]
                    if ready:
                        break
                    soonest = min((self._due.get(p, now) for p in self._wanted), default=None)
                    self._condition.wait(None if soonest is None else max(0.01, soonest - now))
                if self._stopping:
                    return
                project = ready[0]
                self._wanted.remove(project)
                self._running = True
            try:
                self.refresh(project)
            except Exception:  # noqa: BLE001 - the refresh is best effort; the next change tries again
                self.rt.metrics.add("refresh_errors")
                log.exception("project %d: refreshing predictions failed", project)
            finally:
                with self._condition:
                    self._running = False

    # ----- one pass -----
    def refresh(self, project: int) -> RefreshStats | None:
        lock = FileLock(str(self.rt.store.project_dir(project) / ".refresh.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            log.debug("project %d: another process is refreshing its predictions", project)
            return None
        try:
            return self._refresh(project)
        finally:
            lock.release()

    def _refresh(self, project: int) -> RefreshStats:
        started = time.perf_counter()
        engine = self.rt.engine()
        own = own_version_pattern(engine)
        stats = RefreshStats(project)
        try:
            tasks = self.rt.api.unlabelled_tasks(project, self.max_tasks)
        except LabelStudioAPIError as exc:
            log.warning("project %d: cannot list the next tasks to refresh their predictions: %s", project, exc)
            self.rt.metrics.add("refresh_errors")
            return stats
        for task in tasks:
            if not isinstance(task, dict) or integer_id(task.get("id")) is None:
                stats.failed += 1
                log.warning("project %d: a listed task without an id is skipped: %.200r", project, task)
                continue
            try:
                if not self._refresh_task(engine, own, project, task, stats):
                    break
            except (ImageFetchError, LabelStudioAPIError, LabelConfigError, EngineUnavailable) as exc:
                stats.failed += 1
                log.warning("project %d, task %s: prediction not refreshed: %s", project, task["id"], exc)
            except Exception:  # noqa: BLE001 - one odd task must not end the pass for the others
                stats.failed += 1
                log.exception("project %d, task %s: prediction not refreshed", project, task["id"])
        if self._superseded(project) and not stats.stopped:
            stats.stopped = NEWER_MEMORY
        self._report(stats, time.perf_counter() - started)
        if not stats.stopped:
            self._archive_superseded(engine, own, project)
        return stats

    def _archive_superseded(self, engine, own: re.Pattern, project: int) -> None:
        """Relabel this backend's superseded predictions to its archive version (predict/archive.py)."""
        snap = self.rt.store.snapshot(project)
        try:
            self.archive.run(self.rt.api, project, snap.state, project_version(engine, snap, self.rt.settings),
                             archive_version(engine.model_id), own)
        except LabelStudioAPIError as exc:
            log.warning("project %d: cannot archive superseded predictions: %s", project, exc)
            self.rt.metrics.add("refresh_errors")

    def _refresh_task(self, engine, own: re.Pattern, project: int, task: dict, stats: RefreshStats) -> bool:
        """Bring one task's prediction to the current memory; False when the pass must stop (a newer memory, a
        /predict of Label Studio's, or nothing learnt any more)."""
        if self._superseded(project):
            stats.stopped = NEWER_MEMORY
            return False
        if self.predicts.busy(project):  # Label Studio is predicting (label stream, Retrieve predictions)
            self._wait_predicts(project)
            self.notify(project)  # start over: those tasks now have current predictions
            stats.stopped = LS_PREDICTING
            return False
        snap = self.rt.store.snapshot(project)
        if len(snap.memory) == 0:
            stats.stopped = NOTHING_LEARNT  # (any more): predictions would be empty
            return False
        version = stats.model_version = project_version(engine, snap, self.rt.settings)
        stats.tasks += 1
        mine = live_predictions(task, own)
        if any(p["model_version"] == version for p in mine):  # e.g. Label Studio's own /predict made it
            stats.current += 1
            self._retire(task["id"], _superseded_by_current(mine, version), stats)
            return True
        config = self.rt.label_config(snap.state)
        lean = {"id": task["id"], "data": task.get("data"), "project": project}
        thresholds = project_thresholds(snap.state, self.rt.settings.score_threshold)
        prediction = self.predictor.predict_task(engine, snap, config, lean, thresholds, version, strict=True)
        if self.predicts.busy(project):  # a /predict began while we computed: Label Studio will store its
            self._wait_predicts(project)  # result for this task too, and ours would be a second one
            self.notify(project)
            stats.stopped = LS_PREDICTING
            return False
        mine = self._reread(project, task["id"], own)  # Label Studio may have predicted it meanwhile
        if mine is None:
            return True  # annotated (or gone) meanwhile: not ours to touch any more
        if any(p["model_version"] == version for p in mine):
            stats.current += 1
            self._retire(task["id"], _superseded_by_current(mine, version), stats)
            return True
        self._store(task["id"], mine, prediction, stats)
        return True

    def _report(self, stats: RefreshStats, seconds: float) -> None:
        self.rt.metrics.add("refresh_passes")
        self.rt.metrics.add("refresh_predictions_updated", stats.updated)
        self.rt.metrics.add("refresh_predictions_created", stats.created)
        self.rt.metrics.add("refresh_predictions_archived", stats.archived)
        self.rt.metrics.time("refresh", seconds)
        if stats.tasks == 0 and stats.failed == 0:
            log.info("project %d: refresh pass ended before its first task after %.1f s: %s", stats.project, seconds,
                     stats.stopped or "no task without an annotation")
            return
        log.info("project %d: predictions of %d task(s) brought to %s in %.1f s (%d already current, %d replaced, "
                 "%d new, %d older duplicates archived, %d failed)%s", stats.project, stats.tasks,
                 stats.model_version or "-", seconds, stats.current, stats.updated, stats.created, stats.archived,
                 stats.failed, f"; stopped: {stats.stopped}" if stats.stopped else "")

    def _store(self, task_id: int, mine: list[dict], prediction: dict, stats: RefreshStats) -> None:
        api = self.rt.api
        args = (prediction["result"], prediction["score"], prediction["model_version"])
        kept = None
        if mine and api.update_prediction(mine[-1]["id"], *args) is not None:
            kept = mine[-1]["id"]
            stats.updated += 1
        else:
            api.create_prediction(task_id, *args)
            stats.created += 1
        self._retire(task_id, [p for p in mine if p["id"] != kept], stats)

    def _retire(self, task_id: int, predictions: list[dict], stats: RefreshStats) -> None:
        stats.archived += archive_predictions(self.rt.api, [p["id"] for p in predictions],
                                              archive_version(self.rt.engine().model_id), f"task {task_id}")

    def _reread(self, project: int, task_id: int, own: re.Pattern) -> list[dict] | None:
        task = self.rt.api.get_task(task_id, project)
        if task is None or not unannotated(task):
            return None
        return live_predictions(task, own)

    def _wait_predicts(self, project: int) -> None:
        """/predict requests go first; Label Studio stores their predictions itself when they return."""
        deadline = time.monotonic() + PREDICT_WAIT_S
        while self.predicts.busy(project) and time.monotonic() < deadline:
            time.sleep(0.1)

def _superseded_by_current(mine: list[dict], version: str) -> list[dict]:
    """All own predictions but the newest of the current version (the one Label Studio served last)."""
    keep = max((p for p in mine if p["model_version"] == version), key=lambda p: p["id"])
    return [p for p in mine if p["id"] != keep["id"]]
