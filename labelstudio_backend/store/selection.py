"""Which project store NTT_STATE_URL names: the database store (SQLite in MODEL_DIR by default, or PostgreSQL), or
the per-project files of earlier versions ("files")."""
from __future__ import annotations

from typing import Callable

from labelstudio_backend.settings import Settings
from labelstudio_backend.store.database import SqlProjectStore
from labelstudio_backend.store.legacy import LegacyFiles
from labelstudio_backend.store.pending_markers import PendingMarkers
from labelstudio_backend.store.pending_rows import DatabasePendingMarkers
from labelstudio_backend.store.projects import MemoryFactory, ProjectStore
from labelstudio_backend.store.schema import default_url, safe_url


def open_project_store(settings: Settings, memories: Callable[[], MemoryFactory]) -> ProjectStore | SqlProjectStore:
    if settings.state_url == "files":
        return ProjectStore(settings.model_dir, memories, settings.lock_timeout)
    url = settings.state_url or default_url(settings.model_dir)
    return SqlProjectStore(url, settings.model_dir, memories, settings.lock_timeout, settings.project_cache,
                           migrate=LegacyFiles(settings.model_dir, safe_url(url)))


def open_pending_markers(settings: Settings, store: ProjectStore | SqlProjectStore,
                         enabled: bool) -> PendingMarkers | DatabasePendingMarkers:
    """Where a process says it holds unapplied events (enabled in API mode only: without an API key nothing can be
    resynced): rows of the state database when it is PostgreSQL (replicas on several machines), else files in
    MODEL_DIR (the processes of one machine)."""
    if isinstance(store, SqlProjectStore) and store.url.startswith(("postgresql", "postgres:")):
        return DatabasePendingMarkers(lambda: store.db, enabled=enabled)
    return PendingMarkers(settings.model_dir, enabled=enabled)
