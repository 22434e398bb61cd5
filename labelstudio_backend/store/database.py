"""Per-project state in a database (SQLite in MODEL_DIR by default, PostgreSQL when NTT_STATE_URL names one).

The same contract as the file store (store/projects.py): `snapshot` returns the current state and memory, reloaded
only when another process changed them; `edit` yields a copy under the project's exclusive lock and writes what
changed when the block exits normally. Here an edit writes only the rows it changed (a new or replaced annotation
record, a new or replaced reference, removals as flagged rows), all in one transaction with the project row's new
generation, so its cost does not grow with the project. A reader holding generation g loads only the rows stamped
after g: a replica reloads what another replica changed, not the whole project.

Who may write: with SQLite, one machine; the project's file lock (store/locks.py) serialises its writers and the
write itself is one BEGIN IMMEDIATE transaction. With PostgreSQL, any number of replicas: the edit runs inside one
transaction holding the project's advisory lock, so writers of a project queue in the database, and a replica killed
mid-edit leaves nothing half-written (the transaction rolls back, the lock goes with its connection).

What an edit found changed is found by identity: annotation records are replaced, never edited in place (learn/
sync.py builds a new record per event), and a memory change replaces a reference's list (MemoryBank.set_reference).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from labelstudio_backend.store import schema
from labelstudio_backend.store.legacy import LegacyFiles
from labelstudio_backend.store.locks import ProjectLocks
from labelstudio_backend.store.projects import (AnnotationRecord, MemoryFactory, ProjectError, ProjectSnapshot,
                                                ProjectState)
from labelstudio_backend.store.rows import (SETTINGS, Changes, decode_reference, diff, encode_reference,
                                            record_from_json, record_to_json, settings_of, upsert)
from ntt_engine import MemoryBank, MemoryFormatError

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 256  # projects whose memory a process keeps loaded (least recently used dropped first)


@dataclass
class _Held:
    """A project as this process last read it: `stored` is the database's content (the base an edit is compared
    with), `snap` what readers get (the same objects, or an empty memory when the stored one is incompatible)."""

    generation: int
    next_seq: int
    stored: ProjectSnapshot
    snap: ProjectSnapshot


class SqlProjectStore:
    def __init__(self, url: str, model_dir: Path, memories: Callable[[], MemoryFactory], lock_timeout: float = 600.0,
                 cache_size: int = DEFAULT_CACHE_SIZE,
                 migrate: "LegacyFiles | None" = None):
        """`migrate`: where projects still kept in files are read from (and set aside once they are rows)."""
        self.url = url
        self.model_dir = Path(model_dir)
        self._memories = memories
        self._lock_timeout = lock_timeout
        self._cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[int, _Held] = OrderedDict()
        self._guard = threading.Lock()
        self._locks = ProjectLocks(self.project_dir, lock_timeout, ProjectError)
        self._db: tuple[int, Engine] | None = None
        self._migrate = migrate

    @property
    def db(self) -> Engine:
        """This process's engine (a forked worker opens its own connections, never its parent's)."""
        key = schema.process_key()
        with self._guard:
            if self._db is None or self._db[0] != key:
                try:
                    self._db = (key, schema.open_database(self.url, self._lock_timeout))
                except SQLAlchemyError as exc:
                    raise ProjectError(f"the state database {schema.safe_url(self.url)} cannot be opened: "
                                       f"{_reason(exc)}", transient=isinstance(exc, OperationalError)) from exc
                except schema.SchemaError as exc:
                    raise ProjectError(str(exc)) from exc
            return self._db[1]

    @property
    def dialect(self) -> str:
        return self.db.dialect.name

    # ----- paths (thumbnails and event markers stay files beside the database) -----
    def project_dir(self, project_id: int) -> Path:
        return self.model_dir / str(int(project_id))

    def projects(self) -> list[int]:
        with self._reading() as conn:
            ids = set(conn.execute(select(schema.projects.c.project_id)).scalars())
        return sorted(ids | set(self._legacy_projects()))

    def stamps(self) -> dict[int, object]:
        """Every project and a stamp that moves with each of its writes (one query): its generation; a project
        still in files (migrated at its first use) has the stamp None."""
        with self._reading() as conn:
            rows = conn.execute(select(schema.projects.c.project_id, schema.projects.c.generation))
            stamps: dict[int, object] = {project: generation for project, generation in rows}
        for project in self._legacy_projects():
            stamps.setdefault(project, None)
        return dict(sorted(stamps.items()))

    def exists(self, project_id: int) -> bool:
        with self._reading() as conn:
            found = conn.execute(select(schema.projects.c.project_id)
                                 .where(schema.projects.c.project_id == int(project_id))).first()
        return found is not None or int(project_id) in self._legacy_projects()

    def _legacy_projects(self) -> list[int]:
        """Projects whose state is still in files (MODEL_DIR/<id>/state.json), migrated at their first use."""
        return self._migrate.projects() if self._migrate is not None else []

    # ----- reading -----
    def snapshot(self, project_id: int) -> ProjectSnapshot:
        project_id = int(project_id)
        held = self._cached(project_id)
        try:
            with self._reading() as conn:
                current = self._current(conn, project_id)
        except ProjectError as exc:
            if held is None:
                raise
            log.warning("project %d: %s; serving the memory last loaded (generation %d, revision %d)", project_id,
                        exc, held.generation, held.snap.memory.revision)
            return held.snap
        if current is None:
            if project_id in self._legacy_projects():
                with self.edit(project_id):  # migrates the files under the project's lock
                    pass
                return self.snapshot(project_id)
            return ProjectSnapshot(ProjectState(project_id), self._memories().new_memory())
        if current is not held:
            self._remember(project_id, current)
        return current.snap

    def revision(self, project_id: int) -> int:
        return self.snapshot(project_id).memory.revision

    # ----- changing -----
    @contextmanager
    def edit(self, project_id: int) -> Iterator[ProjectSnapshot]:
        project_id = int(project_id)
        with self._exclusive(project_id) as locked:
            with self._reading(locked) as conn:
                held = self._current(conn, project_id)
            if held is not None:
                base, work = held.stored, _working_copy(held.snap)
            else:  # nothing stored yet: every row is written (a legacy project's files become rows here)
                base = ProjectSnapshot(ProjectState(project_id), MemoryBank())
                work = _working_copy(self._migrated(project_id))
            yield work
            work.state.revision = work.memory.revision
            changes = diff(base, work)
            if held is None or changes:
                generation, next_seq = (held.generation, held.next_seq) if held is not None else (0, 0)
                try:
                    with self._writing(locked) as conn:
                        next_seq = self._write(conn, project_id, work, changes, generation, next_seq,
                                               create=held is None)
                except SQLAlchemyError as exc:
                    raise self._write_failed(project_id, exc) from exc
                if held is None and self._migrate is not None:
                    self._migrate.retire(project_id)
                held = _Held(generation + 1, next_seq, work, work)
        self._remember(project_id, held)

    def _current(self, conn: Connection, project_id: int) -> _Held | None:
        generation = conn.execute(select(schema.projects.c.generation)
                                  .where(schema.projects.c.project_id == project_id)).scalar()
        if generation is None:
            return None
        held = self._cached(project_id)
        return held if held is not None and held.generation == generation else self._load(conn, project_id, held)

    def _migrated(self, project_id: int) -> ProjectSnapshot:
        """A project with no row: its legacy files when it has some (written as rows by the edit), else empty."""
        if self._migrate is not None:
            legacy = self._migrate.load(project_id)
            if legacy is not None:
                return _compatible(self._memories(), legacy, project_id)
        return ProjectSnapshot(ProjectState(project_id), self._memories().new_memory())

    def _write(self, conn: Connection, project_id: int, work: ProjectSnapshot, changes: Changes, generation: int,
               next_seq: int, create: bool) -> int:
        """The changed rows and the project row at generation + 1; returns the next free seq."""
        stamp = generation + 1
        work.state.updated_at = time.time()
        project_row = {"project_id": project_id, "generation": stamp, "revision": work.memory.revision,
                       "encoder": work.memory.encoder_name, "settings": json.dumps(settings_of(work.state)),
                       "deleted": json.dumps(work.state.deleted), "updated_at": work.state.updated_at}
        references = []
        for ref in changes.references:
            entries, negative_image = work.memory.stored_as(ref)
            references.append(encode_reference(project_id, ref, entries or [], negative_image, stamp, next_seq))
            next_seq += 1
        references += [{"project_id": project_id, "ref_id": ref, "generation": stamp, "seq": next_seq,
                        "removed": True, "negative_image": False, "entries": "[]", "dim": 0, "vectors": b""}
                       for ref in changes.removed_references]
        records = [{"project_id": project_id, "key": key, "generation": stamp, "removed": False,
                    "record": record_to_json(work.state.annotations[key])} for key in changes.records]
        records += [{"project_id": project_id, "key": key, "generation": stamp, "removed": True, "record": None}
                    for key in changes.removed_records]
        project_row["next_seq"] = next_seq
        if create:
            conn.execute(upsert(conn, schema.projects, ["project_id"]), [project_row])
        else:
            moved = conn.execute(update(schema.projects).where(schema.projects.c.project_id == project_id,
                                                               schema.projects.c.generation == generation)
                                 .values(**project_row))
            if moved.rowcount != 1:  # the lock makes this impossible; refuse rather than interleave two writers
                raise ProjectError(f"project {project_id}: its generation moved past {generation} during an edit")
        if records:
            conn.execute(upsert(conn, schema.annotations, ["project_id", "key"]), records)
        if references:
            conn.execute(upsert(conn, schema.references, ["project_id", "ref_id"]), references)
        return next_seq

    def _write_failed(self, project_id: int, exc: SQLAlchemyError) -> ProjectError:
        log.error("project %d: a write failed: %s", project_id, _reason(exc))
        return ProjectError(f"project {project_id}: cannot save to the state database "
                            f"{schema.safe_url(self.url)}: {_reason(exc)}; the last saved state is kept (free disk "
                            "space, or check that the database is reachable, then retry)")

    # ----- loading rows -----
    def _load(self, conn: Connection, project_id: int, held: _Held | None) -> _Held:
        """The project as the database holds it: from `held` plus the rows stamped after its generation, or whole."""
        row = conn.execute(select(schema.projects).where(schema.projects.c.project_id == project_id)).one()
        whole = held is None or held.generation > row.generation  # a database restored from a backup: start over
        since = 0 if whole else held.generation
        state = ProjectState(project_id) if whole else _copy_state(held.stored.state)
        memory = MemoryBank(row.encoder) if whole else held.stored.memory.copy()
        for key, value in json.loads(row.settings).items():
            if key in SETTINGS:
                setattr(state, key, value)
        state.deleted = json.loads(row.deleted)
        state.revision, state.updated_at = row.revision, row.updated_at
        t = schema.annotations
        query = select(t.c.key, t.c.removed, t.c.record).where(t.c.project_id == project_id, t.c.generation > since)
        for key, removed, body in conn.execute(query if not whole else query.where(t.c.removed.is_(False))):
            if removed:
                state.annotations.pop(key, None)
                continue
            try:
                state.annotations[key] = record_from_json(body)
            except (ValueError, TypeError) as exc:
                self._refused(state, f"annotation record {key}", exc)
        r = schema.references
        query = select(r).where(r.c.project_id == project_id, r.c.generation > since).order_by(r.c.seq)
        for ref_row in conn.execute(query if not whole else query.where(r.c.removed.is_(False))):
            if ref_row.removed:
                memory.set_reference(ref_row.ref_id, [])
                continue
            try:
                entries = decode_reference(ref_row)
                memory.set_reference(ref_row.ref_id, entries, negative_image=ref_row.negative_image)
            except (ValueError, TypeError) as exc:
                self._refused(state, f"reference {ref_row.ref_id}", exc)
        memory.revision = row.revision
        memory.encoder_name = row.encoder
        if held is None and self._migrate is not None:
            self._migrate.retire(project_id)  # files a migration committed but was killed before setting aside
        stored = ProjectSnapshot(state, memory)
        return _Held(row.generation, row.next_seq, stored, _compatible(self._memories(), stored, project_id))

    @staticmethod
    def _refused(state: ProjectState, what: str, exc: Exception) -> None:
        """A corrupt row is left out (never poisons the project) and the project is flagged for a resync."""
        log.error("project %d: %s is corrupt in the state database (%s); left out, the next resync from Label "
                  "Studio restores it", state.project_id, what, exc)
        state.synced_at = state.sync_started_at = None

    # ----- the cache (bounded: the least recently used project is dropped) -----
    def _cached(self, project_id: int) -> _Held | None:
        with self._guard:
            held = self._cache.get(project_id)
            if held is not None:
                self._cache.move_to_end(project_id)
            return held

    def _remember(self, project_id: int, held: _Held) -> None:
        with self._guard:
            current = self._cache.get(project_id)
            if current is None or current.generation <= held.generation:
                self._cache[project_id] = held
                self._cache.move_to_end(project_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def cached_projects(self) -> list[int]:
        with self._guard:
            return list(self._cache)

    # ----- connections -----
    @contextmanager
    def _reading(self, locked: Connection | None = None) -> Iterator[Connection]:
        """A consistent read: inside the held transaction, or its own (REPEATABLE READ on PostgreSQL, a WAL
        snapshot on SQLite)."""
        if locked is not None:
            yield locked
            return
        try:
            with self.db.connect() as conn:
                if self.dialect == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise ProjectError(f"the state database {schema.safe_url(self.url)} cannot be read: {_reason(exc)}",
                               transient=True) from exc

    @contextmanager
    def _connected(self) -> Iterator[Connection]:
        try:
            conn = self.db.connect()
        except OperationalError as exc:
            raise ProjectError(f"the state database {schema.safe_url(self.url)} cannot be reached: {_reason(exc)}; "
                               "the last saved state is kept (retry once it is back)", transient=True) from exc
        with conn:
            yield conn

    @contextmanager
    def _writing(self, locked: Connection | None) -> Iterator[Connection]:
        if locked is not None:
            yield locked  # committed when the edit's transaction ends
            return
        with self.db.connect() as conn:
            with conn.execution_options(immediate=True).begin():
                yield conn

    @contextmanager
    def _exclusive(self, project_id: int) -> Iterator[Connection | None]:
        """The project's write lock. SQLite: the file lock (None: each step opens its own transaction).
        PostgreSQL: a transaction holding the project's advisory lock, in which the edit reads and writes."""
        if self.dialect == "sqlite":
            with self._locks.held(project_id):
                yield None
            return
        with self._locks.held_in_process(project_id), self._connected() as conn:
            with conn.begin():
                conn.execute(text(f"SET LOCAL lock_timeout = '{int(self._lock_timeout * 1000)}ms'"))
                try:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:namespace, :project)"),
                                 {"namespace": schema.LOCK_NAMESPACE, "project": project_id})
                except OperationalError as exc:
                    raise ProjectError(f"project {project_id}: its lock was held for more than "
                                       f"{self._lock_timeout:.0f} s ({_reason(exc)})") from exc
                yield conn


def _reason(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _copy_state(state: ProjectState) -> ProjectState:
    copied = ProjectState(**{f.name: getattr(state, f.name) for f in fields(ProjectState)})
    copied.annotations = dict(state.annotations)
    copied.deleted = list(state.deleted)
    return copied


def _working_copy(snap: ProjectSnapshot) -> ProjectSnapshot:
    return ProjectSnapshot(_copy_state(snap.state), snap.memory.copy())


def _compatible(factory: MemoryFactory, stored: ProjectSnapshot, project_id: int) -> ProjectSnapshot:
    """`stored` when its memory was built with this engine's encoder; else an empty project one revision on (the
    rows stay until the next edit flags them removed), flagged for a resync."""
    try:
        factory.adopt_memory(stored.memory)
        return stored
    except MemoryFormatError as exc:
        memory = factory.new_memory()
        memory.revision = stored.memory.revision + 1  # keep model_version moving forward, never reuse one
        state = _copy_state(stored.state)
        state.annotations = {}
        state.synced_at = state.sync_started_at = None
        state.revision = memory.revision
        log.error("project %d: %s; serving an empty memory (a resync from Label Studio rebuilds it when "
                  "LABEL_STUDIO_API_KEY is set)", project_id, exc)
        return ProjectSnapshot(state, memory)


__all__ = ["SqlProjectStore", "AnnotationRecord"]
