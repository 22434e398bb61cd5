import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEST_THREADS = max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test may read or write the user's checkpoint cache."""
    monkeypatch.setenv("NTT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ntt-cache"))


@pytest.fixture(autouse=True)
def _torch_threads():
    """An Engine built with `num_threads` sets torch's global thread count: no test may leave it changed for the next
    (reduction order, and so the last bits of a float, depends on it)."""
    yield
    if torch.get_num_threads() != TEST_THREADS:
        torch.set_num_threads(TEST_THREADS)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (Debian's postgresql: initdb into a temporary folder, listening on
    127.0.0.1 only); `postgres.new_database()` gives each test its own database."""
    from support.local_postgres import LocalPostgres

    folder = Path(tempfile.mkdtemp(prefix="ntt-pg-"))  # not under pytest's 0700 folder: the server runs as postgres
    server = LocalPostgres(folder / "server")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)
