"""Stores under test: SQLite in a temporary folder, and a database of the session's real PostgreSQL server
(tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from labelstudio_backend.store.database import SqlProjectStore
from labelstudio_backend.store.legacy import LegacyFiles
from labelstudio_backend.store.schema import default_url
from support.store_helpers import Memories


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
