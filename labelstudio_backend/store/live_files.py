"""Files whose lock says their process is alive: the process holds an exclusive flock on them for as long as it
lives, and the kernel drops it however the process dies, so another process that can take the lock knows the owner
is dead (store/pending_markers.py, store/journal.py)."""
from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: callers turn their markers off
    fcntl = None  # type: ignore[assignment]

SUPPORTED = fcntl is not None


def create_locked(lock_file: Path, temp: Path, final: Path) -> int:
    """Open `lock_file` (which is `temp` or inside it), lock it and write this process's pid, then rename `temp` to
    `final`: nothing appears under its final name unlocked. The locked descriptor, kept open by the caller for as
    long as the process lives."""
    fd = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.replace(temp, final)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_if_dead(fd: int) -> bool:
    """Try to take the lock of another process's live file, open as `fd`: True when its process is dead (the lock
    was free) and the file is still linked (not removed, by its owner or by a process taking it over, while we
    looked). The lock is then held until `fd` is closed."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # its process is alive
    return os.fstat(fd).st_nlink > 0
