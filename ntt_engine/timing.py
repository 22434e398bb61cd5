"""Wall-clock time per pipeline stage, accumulated (for logs and the benchmark; negligible overhead)."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator


class StageTimes:
    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        # a GPU runs work after the call that queued it returns: benchmarks pass torch.cuda.synchronize so that
        # each stage is charged its own work (off by default: it would stall the pipeline)
        self.synchronize = synchronize

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        if self.synchronize is not None:
            self.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.synchronize is not None:
                self.synchronize()
            self.seconds[stage] += time.perf_counter() - start
            self.calls[stage] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)


NULL_TIMES = StageTimes()  # for callers that do not care; its numbers are never read
