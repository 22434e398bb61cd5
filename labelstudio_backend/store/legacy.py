"""Projects kept in files by earlier versions (MODEL_DIR/<id>/{state.json, memory.ntt}): read once, written as rows
by the database store's first edit of the project (one transaction), then set aside as `*.migrated` beside where they
were, a backup. An unreadable state.json fails the migration with the reason and changes nothing."""
from __future__ import annotations

import logging
from pathlib import Path

from labelstudio_backend.store.projects import ProjectSnapshot, ProjectStore
from ntt_engine import MemoryBank

log = logging.getLogger(__name__)

BACKUP_SUFFIX = ".migrated"
LEGACY_FILES = ("state.json", "memory.ntt")


class AsStored:
    """Reads a memory file as it is: the database store checks its encoder after the migration."""

    def new_memory(self) -> MemoryBank:
        return MemoryBank()

    def adopt_memory(self, memory: MemoryBank) -> MemoryBank:
        return memory


class LegacyFiles:
    def __init__(self, model_dir: Path, target: str):
        self.model_dir = Path(model_dir)
        self._target = target  # where the rows go, for the log line
        self._files = ProjectStore(self.model_dir, AsStored)

    def projects(self) -> list[int]:
        return self._files.projects()

    def load(self, project_id: int) -> ProjectSnapshot | None:
        """The project's files as a snapshot (a dead writer's leftovers repaired in memory only, as a read does);
        None when it has none. The caller holds the project's lock."""
        if not self._files.exists(project_id):
            return None
        return self._files._load(project_id, repair=False)  # noqa: SLF001 - the file store's own reader, unchanged

    def retire(self, project_id: int) -> None:
        """After the rows are committed: the files become backups (state.json.migrated, memory.ntt.migrated)."""
        directory = self._files.project_dir(project_id)
        kept = []
        for name in LEGACY_FILES:
            path = directory / name
            if path.exists():
                path.replace(path.with_name(name + BACKUP_SUFFIX))
                kept.append(name + BACKUP_SUFFIX)
        if kept:
            log.info("project %d: migrated from files into %s; the files are kept beside as %s", project_id,
                     self._target, ", ".join(kept))
