"""Markers of events a process accepted but has not applied yet, so that events lost with their process are found.

Label Studio never retries a webhook, and /webhook answers before the event is applied (the queue is in memory): a
process killed (kill -9, out of memory, a restart) with events still queued loses them. So while a process holds
unapplied events of a project, the file MODEL_DIR/.pending/<project>.<pid>-<random> exists and the process keeps
an exclusive flock on it (outside the project's directory: a forged event for an unknown project creates nothing
there); the kernel drops that lock when the process dies, however it dies. At /setup (Label Studio
calls it before every batch of predictions), a marker whose lock can be taken belongs to a dead process: its events
were lost, and the project is resynced from Label Studio (API mode only: without an API key there is nothing to
resync from, and markers are not written).
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Iterator

from labelstudio_backend.store.live_files import create_locked, lock_if_dead

try:
    import fcntl
except ImportError:  # not a POSIX system: no markers (the resync on "Start training" still recovers)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DIRECTORY = ".pending"


class PendingMarkers:
    def __init__(self, model_dir: Path, enabled: bool = True):
        self.model_dir = Path(model_dir)
        self.enabled = enabled and fcntl is not None
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._held: dict[int, list[int]] = {}  # project -> [file descriptor, events held]

    def path(self, project: int) -> Path:
        return self.model_dir / DIRECTORY / f"{int(project)}.{self.token}"

    def hold(self, project: int | None) -> None:
        """One more unapplied event of `project` in this process."""
        if not self.enabled or project is None:
            return
        with self._lock:
            entry = self._held.get(project)
            if entry is not None:
                entry[1] += 1
                return
            try:
                self._held[project] = [self._create(project), 1]
            except OSError as exc:
                log.warning("project %d: cannot write its pending-events marker (%s); events lost if this process "
                            "dies are recovered only by Start training", project, exc)

    def release(self, project: int | None) -> None:
        """One event of `project` applied (or given up)."""
        if not self.enabled or project is None:
            return
        with self._lock:
            entry = self._held.get(project)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._held[project]
            try:
                os.unlink(self.path(project))  # before unlocking: a live marker is never seen unlocked
            except OSError:
                pass
            os.close(entry[0])

    def _create(self, project: int) -> int:
        """The marker appears already locked: created under a temporary name, locked, then renamed."""
        final = self.path(project)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(final.name + ".new")
        return create_locked(temp, temp, final)

    def claim_orphans(self, project: int) -> list[str]:
        """Markers of `project` left by dead processes, removed now: their events were lost. Live processes hold
        their markers' locks, so theirs are never claimed."""
        if not self.enabled:
            return []
        claimed = []
        for path, fd in self._open_others(project):
            if not lock_if_dead(fd):
                continue  # its process is alive, or it released the marker while we looked
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue  # replaced by a new live marker meanwhile
                os.unlink(path)
            except OSError:
                continue
            claimed.append(path.name)
        return claimed

    def _open_others(self, project: int) -> Iterator[tuple[Path, int]]:
        """Markers of `project` of other processes, live or dead, each opened (closed once the caller moves on).
        .new: being created, locked a moment later."""
        mine = self.path(project).name
        for path in (self.model_dir / DIRECTORY).glob(f"{int(project)}.*"):
            if path.name == mine or path.name.endswith(".new"):
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                yield path, fd
            finally:
                os.close(fd)

    def others_live(self, project: int) -> bool:
        """True while another live process holds unapplied events of `project` (its marker is locked)."""
        if not self.enabled:
            return False
        for _, fd in self._open_others(project):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True  # locked: its process is alive and has not applied its events yet
            fcntl.flock(fd, fcntl.LOCK_UN)  # a dead process's marker: /setup claims it (resync)
        return False

    def close(self) -> None:
        with self._lock:
            for project, (fd, _) in list(self._held.items()):
                try:
                    os.unlink(self.path(project))
                except OSError:
                    pass
                os.close(fd)
            self._held.clear()
