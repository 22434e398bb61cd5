"""The database store's contract on SQLite and on a real PostgreSQL: what an edit writes is what the next snapshot
(of this process or another) reads; only changed rows are written; removals, order, settings and revisions survive."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from labelstudio_backend.store import schema
from labelstudio_backend.store.projects import AnnotationRecord, ProjectError
from support.store_helpers import DIM, Memories, entries


def _same_memory(a, b) -> None:
    assert a.revision == b.revision
    assert a.reference_order() == b.reference_order()
    assert a.negative_images == b.negative_images
    for ref in a.reference_order():
        left, right = a.entries(ref), b.entries(ref)
        assert [(e.label, e.negative, e.level) for e in left] == [(e.label, e.negative, e.level) for e in right]
        for x, y in zip(left, right):
            np.testing.assert_array_equal(x.vector, y.vector)


def test_an_edit_is_what_a_fresh_process_reads(make_store):
    store = make_store()
    with store.edit(7) as snap:
        snap.state.label_config = "<View/>"
        snap.state.score_threshold = 0.4
        snap.memory.set_reference("annotation:1", entries("cat", 1, 2))
        snap.memory.set_reference("annotation:2", entries("dog", 2), negative_image=False)
        snap.memory.set_reference("annotation:3", entries("cat", 3, negative=True), negative_image=True)
        snap.state.annotations["1"] = AnnotationRecord(11, "reference", ["cat"], 2, "2026-01-01",
                                                       observations=[["cat", 0.7, True]])
        snap.state.deleted = [99]
    fresh = make_store().snapshot(7)
    _same_memory(store.snapshot(7).memory, fresh.memory)
    assert fresh.state.label_config == "<View/>" and fresh.state.score_threshold == 0.4
    assert fresh.state.annotations["1"] == AnnotationRecord(11, "reference", ["cat"], 2, "2026-01-01",
                                                            observations=[["cat", 0.7, True]])
    assert fresh.state.deleted == [99] and fresh.memory.revision == 3 == fresh.state.revision
    assert store.projects() == [7] and store.exists(7) and not store.exists(8)


def test_replaced_and_removed_rows_reach_a_process_that_held_the_older_generation(make_store):
    writer, reader = make_store(), make_store()
    with writer.edit(1) as snap:
        for i in range(5):
            snap.memory.set_reference(f"annotation:{i}", entries("cat" if i % 2 else "dog", i))
            snap.state.annotations[str(i)] = AnnotationRecord(i, "reference", ["cat"], 1, f"t{i}")
    before = reader.snapshot(1)
    with writer.edit(1) as snap:
        snap.memory.set_reference("annotation:1", entries("bird", 40))  # replaced: moves to the end
        snap.memory.remove("annotation:3")
        del snap.state.annotations["3"]
        snap.state.annotations["1"] = AnnotationRecord(1, "reference", ["bird"], 1, "t9")
    after = reader.snapshot(1)
    assert after is not before and before.memory.reference_order() == [f"annotation:{i}" for i in range(5)]
    _same_memory(writer.snapshot(1).memory, after.memory)
    assert after.memory.reference_order() == ["annotation:0", "annotation:2", "annotation:4", "annotation:1"]
    assert sorted(after.state.annotations) == ["0", "1", "2", "4"] and after.state.annotations["1"].labels == ["bird"]
    _same_memory(make_store().snapshot(1).memory, after.memory)  # a whole load agrees with the incremental one


def test_an_edit_writes_only_the_rows_it_changed(make_store):
    store = make_store()
    with store.edit(1) as snap:
        for i in range(20):
            snap.memory.set_reference(f"annotation:{i}", entries("cat", i))
            snap.state.annotations[str(i)] = AnnotationRecord(i, "reference", ["cat"], 1, f"t{i}")
    with store.edit(1) as snap:
        snap.memory.set_reference("annotation:20", entries("cat", 20))
        snap.state.annotations["20"] = AnnotationRecord(20, "reference", ["cat"], 1, "t20")
    with store.db.connect() as conn:
        generation = conn.execute(select(schema.projects.c.generation)).scalar()
        for table in (schema.references, schema.annotations):
            stamped = conn.execute(select(func.count()).select_from(table)
                                   .where(table.c.generation == generation)).scalar()
            assert stamped == 1, table.name
    revision = store.revision(1)
    with store.edit(1):
        pass  # nothing changed: nothing written, the generation stays
    with store.db.connect() as conn:
        assert conn.execute(select(schema.projects.c.generation)).scalar() == generation
    assert store.revision(1) == revision


def test_a_cached_snapshot_is_never_changed_by_an_edit(make_store):
    store = make_store()
    with store.edit(1) as snap:
        snap.memory.set_reference("annotation:1", entries("cat", 1))
    held = store.snapshot(1)
    with store.edit(1) as snap:
        snap.memory.set_reference("annotation:2", entries("cat", 2))
        snap.state.annotations["2"] = AnnotationRecord(2, "reference", ["cat"], 1, "t")
    assert held.memory.reference_order() == ["annotation:1"] and held.state.annotations == {}
    assert store.snapshot(1).memory.reference_order() == ["annotation:1", "annotation:2"]


def test_an_edit_that_raises_writes_nothing(make_store):
    store = make_store()
    with store.edit(1) as snap:
        snap.memory.set_reference("annotation:1", entries("cat", 1))
    with pytest.raises(RuntimeError):
        with store.edit(1) as snap:
            snap.memory.set_reference("annotation:2", entries("cat", 2))
            raise RuntimeError("boom")
    assert make_store().snapshot(1).memory.reference_order() == ["annotation:1"]


def test_a_corrupt_row_is_left_out_and_flags_a_resync(make_store):
    store = make_store()
    with store.edit(1) as snap:
        snap.state.synced_at = 5.0
        snap.memory.set_reference("annotation:1", entries("cat", 1))
        snap.memory.set_reference("annotation:2", entries("dog", 2))
    with store.db.begin() as conn:  # a vector of the wrong length, as a bad restore or a hand edit leaves it
        conn.execute(schema.references.update().where(schema.references.c.ref_id == "annotation:2")
                     .values(vectors=b"\0" * (DIM * 4 - 4)))
    snap = make_store().snapshot(1)
    assert snap.memory.reference_order() == ["annotation:1"] and snap.state.synced_at is None


def test_another_encoder_serves_an_empty_memory_and_the_next_edit_sets_the_rows_aside(make_store):
    with make_store().edit(1) as snap:
        snap.memory.set_reference("annotation:1", entries("cat", 1))
        snap.state.annotations["1"] = AnnotationRecord(1, "reference", ["cat"], 1, "t")
    other = make_store(Memories("enc-b"))
    read = other.snapshot(1)
    assert len(read.memory) == 0 and read.memory.revision == 2 and read.state.annotations == {}
    with other.edit(1):
        pass
    with other.db.connect() as conn:
        kept = conn.execute(select(schema.references.c.removed, func.length(schema.references.c.vectors))).all()
    assert [tuple(row) for row in kept] == [(True, 0)] and other.snapshot(1).memory.encoder_name == "enc-b"
    assert make_store(Memories("enc-b")).snapshot(1).memory.revision == 2


def test_the_project_cache_is_bounded(make_store):
    store = make_store(cache_size=3)
    for project in range(1, 6):
        with store.edit(project) as snap:
            snap.memory.set_reference("annotation:1", entries("cat", project))
        store.snapshot(project)
    store.snapshot(3)
    assert store.cached_projects() == [4, 5, 3]
    assert store.snapshot(1).memory.revision == 1  # dropped from the cache, read again


def test_an_unreachable_database_is_a_project_error(tmp_path):
    from labelstudio_backend.store.database import SqlProjectStore
    store = SqlProjectStore("postgresql://nobody@127.0.0.1:9/none", tmp_path, Memories, lock_timeout=2)
    with pytest.raises(ProjectError, match="state database"):
        store.snapshot(1)


def test_an_unreachable_postgresql_serves_the_last_loaded_memory_and_refuses_writes(tmp_path, caplog):
    from labelstudio_backend.store.database import SqlProjectStore
    from support.local_postgres import LocalPostgres

    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="ntt-pg-down-")) / "server")
    server.start()
    try:
        url = server.new_database()
        store = SqlProjectStore(url, tmp_path, Memories, lock_timeout=5)
        with store.edit(1) as snap:
            snap.memory.set_reference("annotation:1", entries("cat", 1))
        assert store.snapshot(1).memory.revision == 1
        server.pause()
        with caplog.at_level("WARNING"):
            served = store.snapshot(1)
        assert served.memory.reference_order() == ["annotation:1"]
        assert "serving the memory last loaded" in caplog.text
        with pytest.raises(ProjectError, match="state database"):
            with store.edit(1) as snap:
                snap.memory.set_reference("annotation:2", entries("cat", 2))
        with pytest.raises(ProjectError):
            store.snapshot(2)  # never loaded: nothing to serve
        server.resume()
        with store.edit(1) as snap:
            snap.memory.set_reference("annotation:2", entries("cat", 2))
        assert SqlProjectStore(url, tmp_path, Memories).snapshot(1).memory.reference_order() == \
            ["annotation:1", "annotation:2"]
    finally:
        server.stop()
        shutil.rmtree(server.folder.parent, ignore_errors=True)


def test_a_full_sqlite_database_is_a_project_error_naming_the_cause_and_keeps_what_it_held(tmp_path):
    from sqlalchemy import event

    from labelstudio_backend.store.database import SqlProjectStore

    url = schema.default_url(tmp_path)
    store = SqlProjectStore(url, tmp_path, Memories, lock_timeout=5)
    with store.edit(1) as snap:
        snap.memory.set_reference("annotation:1", entries("cat", 1))
        snap.state.annotations["1"] = AnnotationRecord(1, "reference", ["cat"], 1, "t")
    with store.db.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
    store.db.dispose()
    event.listen(store.db, "connect",  # the disk is full: no page may be added (SQLite's SQLITE_FULL)
                 lambda dbapi, _: dbapi.execute(f"PRAGMA max_page_count={pages}"))
    with pytest.raises(ProjectError, match="database or disk is full"):
        with store.edit(1) as snap:
            for i in range(2, 400):
                snap.memory.set_reference(f"annotation:{i}", entries("cat", i, 8))
                snap.state.annotations[str(i)] = AnnotationRecord(i, "reference", ["cat"], 8, "t" * 500)
    fresh = SqlProjectStore(url, tmp_path, Memories).snapshot(1)
    assert fresh.memory.reference_order() == ["annotation:1"] and list(fresh.state.annotations) == ["1"]
    assert store.snapshot(1).memory.reference_order() == ["annotation:1"]  # the failed edit left the cache alone
