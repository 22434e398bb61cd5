"""Stores under test: SQLite in a temporary folder, and a real PostgreSQL server (Debian's postgresql: initdb into a
temporary folder, started on loopback for the session)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from labelstudio_backend.store.database import SqlProjectStore
from labelstudio_backend.store.legacy import LegacyFiles
from labelstudio_backend.store.schema import default_url
from ntt_engine import MemoryBank
from ntt_engine.memory import MemoryEntry
from tests.support.local_postgres import LocalPostgres

DIM = 8


class Memories:
    """A stand-in for the engine's memory factory: the store only needs new and adopted banks."""

    def __init__(self, encoder: str = "enc-a", cap: int | None = None):
        self.encoder, self.cap = encoder, cap

    def new_memory(self) -> MemoryBank:
        return MemoryBank(self.encoder, self.cap)

    def adopt_memory(self, memory: MemoryBank) -> MemoryBank:
        from ntt_engine import MemoryFormatError
        if memory.encoder_name not in (None, self.encoder):
            raise MemoryFormatError(f"built with {memory.encoder_name!r}, this engine uses {self.encoder!r}")
        memory.encoder_name, memory.max_per_class = self.encoder, self.cap
        return memory


def entries(label: str, seed: int, count: int = 1, negative: bool = False) -> list[MemoryEntry]:
    rng = np.random.default_rng(seed)
    return [MemoryEntry(label, rng.standard_normal(DIM).astype(np.float32), negative, 0.5) for _ in range(count)]


@pytest.fixture(scope="session")
def postgres() -> LocalPostgres:
    folder = Path(tempfile.mkdtemp(prefix="ntt-pg-"))  # not under pytest's 0700 folder: the server runs as postgres
    server = LocalPostgres(folder / "server")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return default_url(tmp_path / "model_dir")
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def make_store(tmp_path, state_url):
    def make(memories: Memories | None = None, model_dir: Path | None = None, **kwargs) -> SqlProjectStore:
        folder = model_dir or tmp_path / "model_dir"
        factory = memories or Memories()
        return SqlProjectStore(state_url, folder, lambda: factory, lock_timeout=30,
                               migrate=LegacyFiles(folder, "the database"), **kwargs)
    return make
