"""The backend's development server with every memory write paused twice, so that the crash test can kill -9 it
exactly there: after memory.ntt's temporary file is written (log line `phase=temp-written`) and after its rename,
before state.json (`phase=memory-renamed`). NTT_TEST_WRITE_PAUSE_S sets the pause (default 0.2 s).

    PYTHONPATH=<repo> python -m tests.support.paused_backend --host 127.0.0.1 --port 9090

The product has no such hook: this module wraps the store's atomic write from outside (`install`)."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from labelstudio_backend.store import projects

log = logging.getLogger("paused_writes")
MODULE = "tests.support.paused_backend"  # what BackendServer(module=...) runs


def install(pause: float) -> None:
    """From now on every write of a memory.ntt in this process pauses `pause` s in both phases."""
    original = projects.atomic_write_bytes

    def paused_write(path, data, before_replace=None):
        path = Path(path)
        if path.name != "memory.ntt":
            return original(path, data, before_replace=before_replace)

        def temp_written() -> None:
            if before_replace is not None:
                before_replace()
            log.warning("test hook: %s write paused %.2f s (phase=temp-written)", path, pause)
            time.sleep(pause)

        original(path, data, before_replace=temp_written)
        log.warning("test hook: %s write paused %.2f s (phase=memory-renamed)", path, pause)
        time.sleep(pause)

    projects.atomic_write_bytes = paused_write


if __name__ == "__main__":
    install(float(os.environ.get("NTT_TEST_WRITE_PAUSE_S", "0.2")))
    from labelstudio_backend.__main__ import main

    sys.exit(main(sys.argv[1:]))
