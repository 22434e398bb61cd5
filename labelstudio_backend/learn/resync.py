"""The full resync: bring a project's memory in line with every annotation Label Studio holds (API mode), read in
pages. Incremental: annotations unchanged since the last resync (same updated_at) are not recomputed; what Label
Studio no longer has is removed. A malformed task or annotation is skipped with a log line; the rest syncs.
Nothing is written for a project Label Studio does not confirm (a forged START_TRAINING creates no directory)."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labelstudio_backend.runtime import Runtime

log = logging.getLogger(__name__)

CHUNK = 16  # annotations applied per lock acquisition during a resync
RESYNC_STALE_S = 600.0  # a resync that started longer ago than this is assumed dead


class FullResync:
    """Mixed into Synchronizer, whose apply(), remove() and _api_config() it uses."""

    rt: "Runtime"

    # ----- full resync -----
    def resync(self, project_id: int) -> dict[str, int]:
        """Bring the project's memory in line with every annotation Label Studio holds (incremental: unchanged
        annotations, by updated_at, are not recomputed)."""
        started = time.perf_counter()
        stored = self.rt.store.exists(project_id)
        # a stored project is marked at once, so that a /setup meanwhile does not queue a second resync; one not
        # stored yet only once Label Studio confirms it exists (a forged START_TRAINING creates nothing)
        known = self._mark_started(project_id) if stored else {}
        config = self._api_config(project_id)
        if config is None:
            return {}
        if not stored:
            known = self._mark_started(project_id)
        seen: set[str] = set()
        todo: list[tuple[dict, dict]] = []
        stats = {"tasks": 0, "annotations": 0, "applied": 0, "removed": 0}
        for task in self.rt.api.iter_tasks(project_id):
            if not isinstance(task, dict):
                log.warning("project %d: a task listed by Label Studio is not an object; skipped", project_id)
                continue
            stats["tasks"] += 1
            for annotation in self.rt.api.annotations_of(task):
                key = str(annotation.get("id"))
                seen.add(key)
                stats["annotations"] += 1
                if key in known and known[key] == annotation.get("updated_at") and not annotation.get("was_cancelled"):
                    continue
                todo.append((annotation, task))
        for start in range(0, len(todo), CHUNK):
            self.apply(project_id, config, todo[start:start + CHUNK])
        stats["applied"] = len(todo)
        # what Label Studio no longer has: known records, and references of the memory itself (a record may be
        # missing after a crash between the memory write and the state write)
        held = set(known) | {r.split(":", 1)[1] for r in self.rt.store.snapshot(project_id).memory.reference_ids()
                             if r.startswith("annotation:")}
        gone = sorted(int(k) for k in held if k not in seen and k.isdigit())
        stats["removed"] = self.remove(project_id, gone) if gone else 0
        with self.rt.store.edit(project_id) as snap:
            snap.state.synced_at = time.time()
            snap.state.label_config = config.xml
        log.info("project %d resynced in %.1f s: %s -> memory revision %d", project_id,
                 time.perf_counter() - started, stats, self.rt.store.revision(project_id))
        self.rt.metrics.add("resyncs")
        return stats

    def _mark_started(self, project_id: int) -> dict[str, str | None]:
        """Record that a resync started; the known annotations' updated_at."""
        with self.rt.store.edit(project_id) as snap:
            snap.state.sync_started_at = time.time()
            return {k: v.updated_at for k, v in snap.state.annotations.items()}
