"""One project's exclusive lock on this machine: a thread lock (threads of this process) and a file lock in the
project's directory (the other gunicorn workers), taken in that order."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout


class ProjectLocks:
    def __init__(self, directory_of: Callable[[int], Path], timeout: float, error: Callable[[str], Exception]):
        """`error` builds the exception raised when the lock stays held for more than `timeout` seconds."""
        self._directory_of = directory_of
        self._timeout = timeout
        self._error = error
        self._guard = threading.Lock()
        self._thread_locks: dict[int, threading.RLock] = {}

    def _thread_lock(self, project_id: int) -> threading.RLock:
        with self._guard:
            return self._thread_locks.setdefault(project_id, threading.RLock())

    @contextmanager
    def held_in_process(self, project_id: int) -> Iterator[None]:
        """The thread lock only (other processes are kept out by other means: a database lock)."""
        with self._thread_lock(project_id):
            yield

    @contextmanager
    def held(self, project_id: int) -> Iterator[None]:
        thread_lock = self._thread_lock(project_id)
        directory = self._directory_of(project_id)
        directory.mkdir(parents=True, exist_ok=True)
        with thread_lock:
            lock = FileLock(str(directory / ".lock"), timeout=self._timeout)
            try:
                lock.acquire()
            except Timeout:
                raise self._error(f"project {project_id}: its lock {directory / '.lock'} was held for more than "
                                  f"{self._timeout:.0f} s") from None
            try:
                yield
            finally:
                lock.release()
