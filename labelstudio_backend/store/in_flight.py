"""Which projects have webhook events accepted but not yet applied, and waiting (bounded) until they are.

Label Studio delivers a webhook synchronously (no Redis) and serves the next task of the label stream right after
the submit returns: it calls /setup for the model_version, then /predict for a task without a prediction of that
version. Measured without waiting: /setup came 60 ms after the submit, the event reached the memory 260 ms later,
so the next task was predicted with the memory of one submit before. So /webhook waits a little for its own event
(NTT_WEBHOOK_APPLY_WAIT_S, under Label Studio's 1 s webhook timeout), and /setup and /predict wait for every
unapplied event of their project (NTT_SETUP_WAIT_S, under /setup's 3 s timeout; NTT_PREDICT_WAIT_S). Other
processes of the same MODEL_DIR (gunicorn workers) are seen through their pending-event markers (store/pending_markers.py).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from contextlib import contextmanager

from labelstudio_backend.store.pending_markers import PendingMarkers

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often another process's markers are looked at while waiting


class ProjectActivity:
    """In-process counts of unapplied events per project, with a condition to wait on."""

    def __init__(self, markers: PendingMarkers | None = None):
        self.markers = markers
        self._counts: Counter[int] = Counter()
        self._stalled: set[int] = set()  # projects whose next event waits for the state database to come back
        self._condition = threading.Condition()

    def hold(self, project: int | None) -> None:
        """One more unapplied event of `project`."""
        if project is None:
            return
        with self._condition:
            self._counts[project] += 1

    def release(self, project: int | None) -> None:
        if project is None:
            return
        with self._condition:
            self._counts[project] -= 1
            if self._counts[project] <= 0:
                del self._counts[project]
            self._condition.notify_all()

    def stall(self, project: int | None, stalled: bool) -> None:
        """While `project`'s events wait for the state database, nobody waits for them: the answer would only come
        later, from the same memory."""
        if project is None:
            return
        with self._condition:
            (self._stalled.add if stalled else self._stalled.discard)(project)
            self._condition.notify_all()

    def stalled(self, project: int) -> bool:
        with self._condition:
            return project in self._stalled

    def pending(self, project: int) -> int:
        with self._condition:
            return self._counts.get(project, 0)

    def wait_project(self, project: int, timeout: float) -> bool:
        """True once no event of `project` is waiting here or in another live process of this MODEL_DIR; False
        when `timeout` s passed first (the caller goes on with the memory as it is)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._condition:
                local = self._counts.get(project, 0)
                if local and project in self._stalled:
                    return False
                if local:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._condition.wait(min(left, POLL_S))
                    continue
            if self.markers is None or not self.markers.others_live(project):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)


def wait_for_events(activity: ProjectActivity, metrics, project: int, timeout: float, what: str) -> bool:
    """wait_project with a log line and counters saying whether the memory was current when `what` answered."""
    if timeout <= 0:
        return activity.pending(project) == 0
    started = time.perf_counter()
    busy = activity.pending(project) > 0 or (activity.markers is not None and activity.markers.others_live(project))
    if not busy:
        return True
    if activity.stalled(project):
        metrics.add(f"fresh_waits_skipped_{what}")
        log.warning("project %d: %s answers with the memory last loaded: its pending events wait for the state "
                    "database, which cannot be reached", project, what)
        return False
    done = activity.wait_project(project, timeout)
    waited = time.perf_counter() - started
    metrics.time(f"fresh_wait {what}", waited)
    if done:
        metrics.add(f"fresh_waits_{what}")
        log.info("project %d: %s waited %.2f s for pending annotation events, answering with the new memory",
                 project, what, waited)
    else:
        metrics.add(f"fresh_wait_timeouts_{what}")
        log.warning("project %d: %s answered after %.1f s with events still pending (raise NTT_%s_WAIT_S, or expect "
                    "the next task to use the previous memory)", project, what, waited, what.upper())
    return done


class PredictsInFlight:
    """Marker files MODEL_DIR/<project>/.predicting.<pid>-<n> while a /predict of that project runs, in any process
    of this MODEL_DIR: the refresh (predict/refresher.py) waits for them, since Label Studio creates the predictions of a
    /predict itself when it returns, and refreshing the same tasks meanwhile would give them two. A /setup counts
    too: Label Studio chooses the tasks to predict right after it."""

    STALE_S = 600.0  # a marker older than this was left by a killed process
    SETTLE_S = 3.0  # after a /predict answered, Label Studio still has to store its predictions

    def __init__(self, project_dir):
        self.project_dir = project_dir  # callable: project id -> Path
        self._count = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, project: int):
        with self._lock:
            self._count += 1
            path = self.project_dir(project) / f".predicting.{os.getpid()}-{self._count}"
        try:
            path.touch()  # a project without a directory has no memory, so nothing to refresh: no marker
        except OSError:
            path = None
        try:
            yield
        finally:
            if path is not None:
                try:
                    (path.parent / ".predicted").touch()
                except OSError:
                    pass
                path.unlink(missing_ok=True)

    def expect(self, project: int) -> None:
        """A /setup: Label Studio asks it right before it picks the tasks lacking a current prediction and calls
        /predict for them (label stream, Retrieve predictions); a refreshed prediction written in between would be a
        second one. Counts as a /predict that just answered (busy for SETTLE_S)."""
        directory = self.project_dir(project)
        if directory.is_dir():  # a project without a directory has nothing to refresh: nothing is created
            try:
                (directory / ".predicted").touch()
            except OSError:
                pass

    def busy(self, project: int) -> bool:
        now = time.time()
        try:
            if now - (self.project_dir(project) / ".predicted").stat().st_mtime < self.SETTLE_S:
                return True
        except OSError:
            pass
        for path in self.project_dir(project).glob(".predicting.*"):
            try:
                if now - path.stat().st_mtime < self.STALE_S:
                    return True
            except OSError:
                continue
        return False
