"""MODEL_DIRs of earlier versions (state.json + memory.ntt per project) become rows at the project's first use, in
one transaction; the files stay beside as backups; an unreadable one fails with the reason and changes nothing."""
from __future__ import annotations

import pytest

from labelstudio_backend.store.projects import AnnotationRecord, ProjectError, ProjectStore
from support.store_helpers import Memories, entries


def _file_project(model_dir, project_id: int = 3) -> ProjectStore:
    files = ProjectStore(model_dir, Memories)
    with files.edit(project_id) as snap:
        snap.state.label_config = "<View/>"
        snap.memory.set_reference("annotation:1", entries("cat", 1, 2))
        snap.memory.set_reference("annotation:2", entries("dog", 2))
        snap.state.annotations["1"] = AnnotationRecord(1, "reference", ["cat"], 2, "t1",
                                                       observations=[["cat", 0.9, True]])
        snap.state.annotations["2"] = AnnotationRecord(2, "reference", ["dog"], 1, "t2")
        snap.state.deleted = [8]
    return files


def test_a_file_project_becomes_rows_and_its_files_a_backup(tmp_path, make_store):
    model_dir = tmp_path / "model_dir"
    before = _file_project(model_dir).snapshot(3)
    store = make_store(model_dir=model_dir)
    assert store.projects() == [3] and store.exists(3)
    after = store.snapshot(3)
    assert after.memory.reference_order() == before.memory.reference_order()
    assert after.memory.revision == before.memory.revision == 2
    assert after.state.annotations == before.state.annotations and after.state.deleted == [8]
    assert after.state.label_config == "<View/>"
    folder = model_dir / "3"
    assert not (folder / "state.json").exists() and not (folder / "memory.ntt").exists()
    assert (folder / "state.json.migrated").exists() and (folder / "memory.ntt.migrated").exists()
    again = make_store(model_dir=model_dir).snapshot(3)  # another process: reads the rows
    assert again.memory.reference_order() == ["annotation:1", "annotation:2"] and again.memory.revision == 2


def test_a_failed_migration_changes_nothing_and_says_why(tmp_path, make_store):
    model_dir = tmp_path / "model_dir"
    _file_project(model_dir)
    (model_dir / "3" / "state.json").write_text("{not json")
    store = make_store(model_dir=model_dir)
    with pytest.raises(ProjectError, match="unreadable .*state.json"):
        store.snapshot(3)
    assert (model_dir / "3" / "state.json").read_text() == "{not json" and (model_dir / "3" / "memory.ntt").exists()
    with store.db.connect() as conn:
        from sqlalchemy import func, select

        from labelstudio_backend.store import schema
        assert conn.execute(select(func.count()).select_from(schema.projects)).scalar() == 0


def test_files_left_by_a_migration_killed_after_its_commit_are_set_aside(tmp_path, make_store):
    model_dir = tmp_path / "model_dir"
    _file_project(model_dir)
    make_store(model_dir=model_dir).snapshot(3)
    for name in ("state.json", "memory.ntt"):  # as if killed between the commit and the renames
        (model_dir / "3" / f"{name}.migrated").rename(model_dir / "3" / name)
    snap = make_store(model_dir=model_dir).snapshot(3)
    assert snap.memory.revision == 2 and not (model_dir / "3" / "state.json").exists()
