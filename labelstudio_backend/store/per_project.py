"""Per-project figures computed once per change of the project, not once per request: /metrics and /versions list
every project, and with a thousand of them, loading each one's memory on every scrape would cost seconds. A
project's stamp (its database generation, or its files' identity) moves with every write, by any process; a figure
is recomputed only for the projects whose stamp moved since it was cached."""
from __future__ import annotations

import threading
from typing import Any, Callable, Hashable


class PerProject:
    def __init__(self) -> None:
        self._held: dict[int, tuple[Hashable, Any]] = {}
        self._lock = threading.Lock()

    def get(self, project: int, stamp: Hashable, compute: Callable[[], Any]) -> Any:
        """The figure of `project` at `stamp`: cached, or computed now (an exception is not cached)."""
        with self._lock:
            held = self._held.get(project)
        if held is not None and held[0] == stamp:
            return held[1]
        value = compute()
        with self._lock:
            self._held[project] = (stamp, value)
        return value
