"""A write-ahead journal of accepted webhook events: an event /webhook accepted is applied even when its process dies
before applying it (kill -9, out of memory, a restart) or the state database is down for longer than the process
lives.

Each process owns the folder MODEL_DIR/.journal/<pid>-<random>/ and holds an exclusive flock on its `owner` file for
as long as it lives (the kernel drops it however the process dies). An accepted event (not a resync: /setup asks for
those again) is written there, atomically and fsync'd, before /webhook answers, and removed once applied or refused
for good. A process starting on the same MODEL_DIR takes over every folder whose owner lock it can take (its process
is dead), queues its events in the order they arrived, then removes the folder.

Replaying an old event is safe: the synchroniser ignores an event older (updated_at) than what it holds and events
about deleted annotations, and an event applied twice changes nothing the second time.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from labelstudio_backend.labelstudio.webhooks import SyncJob
from labelstudio_backend.store.live_files import SUPPORTED, create_locked, lock_if_dead
from ntt_engine.memory import atomic_write_bytes

log = logging.getLogger(__name__)

DIRECTORY = ".journal"
OWNER = "owner"
ENTRY_SUFFIX = ".json"
UNREADABLE_SUFFIX = ".unreadable"


class JournalError(RuntimeError):
    """An accepted event could not be written down (a full disk, a read-only MODEL_DIR): /webhook answers 503."""


def encode_job(job: SyncJob) -> bytes:
    return json.dumps({"action": job.action, "project_id": job.project_id, "annotations": list(job.annotations),
                       "tasks": {str(k): v for k, v in job.tasks.items()}, "label_config": job.label_config,
                       "received_at": job.received_at, "size_bytes": job.size_bytes}).encode()


def decode_job(data: bytes) -> SyncJob:
    """The job an entry holds; ValueError (or KeyError/TypeError) for an entry that is not one."""
    raw = json.loads(data)
    project = raw["project_id"]
    return SyncJob(action=str(raw["action"]), project_id=None if project is None else int(project),
                   annotations=tuple(dict(a) for a in raw["annotations"]),
                   tasks={int(k): dict(v) for k, v in raw["tasks"].items()},
                   label_config=str(raw["label_config"]), received_at=float(raw["received_at"]),
                   size_bytes=int(raw["size_bytes"]))


@dataclass
class Orphans:
    """The journals of dead processes, locked by the process taking them over until `EventJournal.discard`."""
    jobs: list[SyncJob]
    folders: list[tuple[Path, int]]  # (folder, its owner file's descriptor, locked)


class EventJournal:
    def __init__(self, model_dir: Path):
        self.root = Path(model_dir) / DIRECTORY
        self.enabled = SUPPORTED  # not a POSIX system: no journal (events queued in memory only)
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._folder: Path | None = None
        self._owner_fd: int | None = None
        self._sequence = itertools.count()

    def write(self, job: SyncJob) -> str | None:
        """Write `job` down; its entry's path (None when the journal is off). JournalError when it cannot be."""
        if not self.enabled:
            return None
        try:
            with self._lock:
                path = self._own() / f"{next(self._sequence):012d}{ENTRY_SUFFIX}"
            atomic_write_bytes(path, encode_job(job))
        except OSError as exc:
            raise JournalError(f"cannot write the event down in {self.root} ({exc})") from exc
        return str(path)

    def remove(self, entry: str | None) -> None:
        """The event of `entry` was applied, or refused for good."""
        if entry is not None:
            Path(entry).unlink(missing_ok=True)

    def _own(self) -> Path:
        """This process's folder, created locked: under a temporary name, locked, then renamed (a folder without
        its lock is never seen under its final name)."""
        if self._folder is None:
            final = self.root / self.token
            temp = self.root / f"{self.token}.new"
            temp.mkdir(parents=True, exist_ok=True)
            self._owner_fd = create_locked(temp / OWNER, temp, final)
            self._folder = final
        return self._folder

    def claim_orphans(self) -> Orphans:
        """The events of dead processes' journals, oldest first; their folders stay locked by this process until
        `discard` (called once the events are queued again, so written into this process's journal)."""
        orphans = Orphans([], [])
        if not self.enabled or not self.root.is_dir():
            return orphans
        for folder in sorted(self.root.iterdir()):
            if folder.name == self.token or folder.name.endswith(".new") or not folder.is_dir():
                continue
            fd = self._take(folder)
            if fd is None:
                continue
            orphans.folders.append((folder, fd))
            for entry in sorted(folder.glob(f"*{ENTRY_SUFFIX}")):
                try:
                    orphans.jobs.append(decode_job(entry.read_bytes()))
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    aside = entry.with_suffix(UNREADABLE_SUFFIX)
                    log.error("journal entry %s cannot be read (%s); set aside as %s, not applied", entry, exc,
                              aside.name)
                    entry.replace(aside)
        orphans.jobs.sort(key=lambda job: job.received_at)
        return orphans

    @staticmethod
    def _take(folder: Path) -> int | None:
        """The locked owner file of a dead process's folder, or None (alive, or taken over meanwhile)."""
        try:
            fd = os.open(folder / OWNER, os.O_RDWR)
        except OSError:
            return None
        if lock_if_dead(fd):
            return fd
        os.close(fd)
        return None

    def discard(self, orphans: Orphans) -> None:
        """Remove the taken-over folders (their events are in this process's journal now); unreadable entries
        stay, set aside, for a person to look at."""
        for folder, fd in orphans.folders:
            try:
                for entry in folder.glob(f"*{ENTRY_SUFFIX}"):
                    entry.unlink(missing_ok=True)
                kept = [p for p in folder.iterdir() if p.name != OWNER]
                if not kept:
                    (folder / OWNER).unlink(missing_ok=True)  # before unlocking: never seen unlocked and linked
                    folder.rmdir()
            except OSError as exc:
                log.warning("journal folder %s of a dead process could not be removed (%s)", folder, exc)
            finally:
                os.close(fd)
