"""The background worker: /webhook only enqueues (Label Studio waits 1 s and never retries); one daemon thread per
process applies jobs in arrival order, so a project's events are applied in the order they came. Each accepted event is
written down first (store/journal.py) and replayed by the next process on this MODEL_DIR if this one dies before
applying it; while a project has queued events, a pending marker (store/pending_markers.py) also tells other replicas,
which resync it from Label Studio if this process dies."""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from typing import Callable

from labelstudio_backend.labelstudio.webhooks import SyncJob
from labelstudio_backend.learn.sync import Synchronizer
from labelstudio_backend.metrics import Metrics
from labelstudio_backend.store.in_flight import ProjectActivity
from labelstudio_backend.store.journal import EventJournal
from labelstudio_backend.store.pending_markers import PendingMarkers
from labelstudio_backend.store.projects import ProjectError

log = logging.getLogger(__name__)


class SyncWorker:
    def __init__(self, synchronizer: Synchronizer, metrics: Metrics, maxsize: int = 10_000,
                 markers: PendingMarkers | None = None, max_bytes: int = 128 * 1024 * 1024,
                 on_change: Callable[[int], None] | None = None, store_retry_s: float = 300.0,
                 journal: EventJournal | None = None):
        self.synchronizer = synchronizer
        self.journal = journal
        self.store_retry_s = store_retry_s  # how long an event is retried while the state database is unreachable
        self.metrics = metrics
        self.markers = markers
        self.activity = ProjectActivity(markers)  # /setup, /predict and /webhook wait on it (store/in_flight.py)
        self.on_change = on_change  # called with the project id after a job changed its memory
        self._queue: queue.Queue[SyncJob | None] = queue.Queue(maxsize=maxsize)
        self.max_bytes = max_bytes  # bound on the queued jobs' size_bytes: 20 big payloads must not hold GBs
        self._queued_bytes = 0
        self._pending_resyncs: set[int] = set()  # coalesce: one queued resync per project is enough
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._replay_orphans()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="ntt-sync-worker", daemon=True)
            self._thread.start()

    def _replay_orphans(self) -> None:
        """Queue the events that processes now dead accepted on this MODEL_DIR and never applied."""
        if self.journal is None:
            return
        orphans = self.journal.claim_orphans()
        if not orphans.folders:
            return
        queued = sum(self.submit(job) for job in orphans.jobs)
        if queued < len(orphans.jobs):  # the queue is full: leave them all for the next start, nothing is lost
            log.error("%d of %d events left by dead processes could not be queued; kept for the next start",
                      len(orphans.jobs) - queued, len(orphans.jobs))
            for _, fd in orphans.folders:
                os.close(fd)
            return
        self.journal.discard(orphans)
        if orphans.jobs:
            self.metrics.add("lost_events_recovered", len(orphans.jobs))
            log.warning("%d events accepted by processes that died before applying them are queued again "
                        "(from %s)", len(orphans.jobs), ", ".join(folder.name for folder, _ in orphans.folders))

    def submit(self, job: SyncJob) -> bool:
        """False when the queue is full, by count or by bytes (the caller answers 503); True when queued or when the
        job duplicates a queued resync. JournalError (503 too) when the event cannot be written down."""
        resync = job.is_resync
        if self.journal is not None and not resync:
            job = dataclasses.replace(job, journal_entry=self.journal.write(job))  # the same Outcome
        try:
            accepted = self._enqueue(job, resync)
        except BaseException:
            self._forget(job)
            raise
        if not accepted:
            self._forget(job)
        return accepted

    def _requeue(self, job: SyncJob) -> None:
        """A deferred event, queued again (it is still in the journal)."""
        if not self._enqueue(job, job.is_resync):
            log.error("%s for project %s could not be queued again (the queue is full); it stays in %s for the "
                      "next start", job.action, job.project_id, job.journal_entry)

    def _forget(self, job: SyncJob) -> None:
        if self.journal is not None:
            self.journal.remove(job.journal_entry)

    def _enqueue(self, job: SyncJob, resync: bool) -> bool:
        with self._lock:
            if resync and job.project_id in self._pending_resyncs:
                return True
            if self._queued_bytes and self._queued_bytes + job.size_bytes > self.max_bytes:
                self.metrics.add("events_dropped")
                log.warning("%s refused: the queued events hold %d bytes, %d more would pass NTT_QUEUE_MAX_BYTES=%d",
                            job.action, self._queued_bytes, job.size_bytes, self.max_bytes)
                return False
            if self.markers is not None:
                self.markers.hold(job.project_id)
            if not resync:  # resyncs can take long: nobody waits for them
                self.activity.hold(job.project_id)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                if self.markers is not None:
                    self.markers.release(job.project_id)
                if not resync:
                    self.activity.release(job.project_id)
                self.metrics.add("events_dropped")
                return False
            if resync and job.project_id is not None:
                self._pending_resyncs.add(job.project_id)
            self._queued_bytes += job.size_bytes
        self.metrics.add(f"events_queued_{job.action}")
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once every queued job has been processed (tests and graceful shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._process(job)
            finally:
                self._queue.task_done()

    def _revision(self, project_id: int | None) -> int | None:
        if project_id is None or self.on_change is None:
            return None
        try:
            return self.synchronizer.rt.store.revision(project_id)
        except Exception:  # noqa: BLE001 - an unreadable project: the job itself reports it
            return None

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def _handle_retrying(self, job: SyncJob) -> None:
        """Apply `job`; while the state database cannot be reached, keep it (and every event queued behind it, in
        order) and retry with backoff for up to `store_retry_s`: an accepted event is not dropped for an outage."""
        delay, deadline = 0.25, time.monotonic() + self.store_retry_s
        try:
            while True:
                try:
                    self.synchronizer.handle(job)
                    return
                except ProjectError as exc:
                    if not exc.transient or time.monotonic() + delay > deadline:
                        raise
                    log.warning("%s for project %s: %s; the event stays queued, retrying in %.1f s", job.action,
                                job.project_id, exc, delay)
                    self.metrics.add("events_retried")
                    self.activity.stall(job.project_id, True)  # /setup, /predict stop waiting for it meanwhile
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
        finally:
            self.activity.stall(job.project_id, False)

    def _process(self, job: SyncJob) -> None:
        with self._lock:
            self._queued_bytes -= job.size_bytes
            if job.is_resync:
                self._pending_resyncs.discard(job.project_id)
        started = time.perf_counter()
        before = self._revision(job.project_id)
        kept = False  # written down, left in the journal and queued again later
        try:
            self._handle_retrying(job)
            self.metrics.add("events_applied")
            if self.on_change is not None and job.project_id is not None and \
                    self._revision(job.project_id) != before:
                self.on_change(job.project_id)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the worker
            kept = isinstance(exc, ProjectError) and exc.transient and job.journal_entry is not None
            if kept:
                self.metrics.add("events_deferred")
                log.error("%s for project %s: the state database stayed unreachable for NTT_STORE_RETRY_S (%s); the "
                          "event stays written down in %s and is queued again in %.0f s (or applied at the next "
                          "start)", job.action, job.project_id, exc, job.journal_entry, self.store_retry_s)
            else:
                self.metrics.add("events_failed")
                log.exception("applying %s for project %s failed", job.action, job.project_id)
                # before the release below wakes the /webhook that waits for it
                job.outcome.fail(str(exc) if isinstance(exc, ProjectError) else f"{type(exc).__name__}: {exc}",
                                 retryable=isinstance(exc, ProjectError))
            self.synchronizer.mark_unsynced(job.project_id)
        finally:
            if not kept:
                self._forget(job)
            if self.markers is not None:
                self.markers.release(job.project_id)
            if not job.is_resync:
                self.activity.release(job.project_id)
            if kept:  # the events behind it go first meanwhile (nothing older than what a project holds applies)
                retry = threading.Timer(self.store_retry_s, self._requeue, (job,))
                retry.daemon = True
                retry.start()
            elapsed = time.perf_counter() - started
            self.metrics.time("sync", elapsed)
            log.debug("%s for project %s done in %.2f s (%.1f s after it arrived)", job.action, job.project_id,
                      elapsed, time.time() - job.received_at)
