"""Which project store NTT_STATE_URL names: the database store (SQLite in MODEL_DIR by default, or PostgreSQL), or
the per-project files of earlier versions ("files")."""
from __future__ import annotations

from typing import Callable

from labelstudio_backend.settings import Settings
from labelstudio_backend.store.database import SqlProjectStore
from labelstudio_backend.store.legacy import LegacyFiles
from labelstudio_backend.store.projects import MemoryFactory, ProjectStore
from labelstudio_backend.store.schema import default_url, safe_url


def open_project_store(settings: Settings, memories: Callable[[], MemoryFactory]) -> ProjectStore | SqlProjectStore:
    if settings.state_url == "files":
        return ProjectStore(settings.model_dir, memories, settings.lock_timeout)
    url = settings.state_url or default_url(settings.model_dir)
    return SqlProjectStore(url, settings.model_dir, memories, settings.lock_timeout, settings.project_cache,
                           migrate=LegacyFiles(settings.model_dir, safe_url(url)))
