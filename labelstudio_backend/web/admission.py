"""Bounded admission for /predict: a fixed number of requests inside at once, the rest answered 503 at once with
Retry-After instead of piling up until Label Studio's timeout."""
from __future__ import annotations

import math
import threading


class Admission:
    """A bounded admission queue: at most `slots` requests inside at once; the others are turned away at once with
    an estimate of when to come back (Retry-After), instead of piling up in the server's accept queue until Label
    Studio's timeout."""

    def __init__(self, slots: int):
        self.slots = slots
        self._lock = threading.Lock()
        self._inside = 0
        self._mean_s: float | None = None  # moving average of one admitted request's duration

    def try_enter(self) -> bool:
        with self._lock:
            if self._inside >= self.slots:
                return False
            self._inside += 1
            return True

    def leave(self, seconds: float) -> None:
        with self._lock:
            self._inside -= 1
            self._mean_s = seconds if self._mean_s is None else 0.8 * self._mean_s + 0.2 * seconds

    @property
    def inside(self) -> int:
        return self._inside

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead, served one at a time by the engine."""
        with self._lock:
            per_request = self._mean_s if self._mean_s is not None else 2.0
            return int(min(120, max(1, math.ceil(per_request * max(1, self._inside) / max(1, self.slots)))))
