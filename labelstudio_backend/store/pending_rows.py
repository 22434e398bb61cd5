"""Markers of accepted-but-unapplied events in PostgreSQL, for backend replicas on several machines (the same
contract as store/pending_markers.py, whose flock'd files only work on one machine's disk).

While a process holds unapplied events of a project, a row (project, its token, its lock key) exists in
`ntt_pending`, and the process holds a session-level advisory lock on its key for as long as it lives: the database
drops that lock when the process's connection dies, however the process dies. Another replica that can take the
lock knows the process is dead: its events were lost, and /setup resyncs the project from Label Studio.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid

from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from labelstudio_backend.store import schema

log = logging.getLogger(__name__)


class DatabasePendingMarkers:
    def __init__(self, database: "Engine | callable", enabled: bool = True):
        """`database`: the store's engine, or a callable returning it (opened lazily, per process)."""
        self._database = database
        self.enabled = enabled
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.lock_key = random.SystemRandom().randint(1, 2 ** 31 - 1)
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # project -> events held
        self._session: Connection | None = None  # holds this process's liveness lock

    @property
    def db(self) -> Engine:
        return self._database() if callable(self._database) else self._database

    def _alive(self) -> Connection:
        """The connection holding this process's liveness lock (taken once, kept until close)."""
        if self._session is None:
            session = self.db.connect().execution_options(isolation_level="AUTOCOMMIT")
            session.execute(text("SELECT pg_advisory_lock(:namespace, :key)"),
                            {"namespace": schema.PENDING_NAMESPACE, "key": self.lock_key})
            self._session = session
        return self._session

    def hold(self, project: int | None) -> None:
        if not self.enabled or project is None:
            return
        with self._lock:
            if self._held.get(project):
                self._held[project] += 1
                return
            try:
                session = self._alive()
                session.execute(schema.pending.delete().where(schema.pending.c.project_id == project,
                                                              schema.pending.c.token == self.token))
                session.execute(insert(schema.pending).values(project_id=project, token=self.token,
                                                              lock_key=self.lock_key, since=time.time()))
            except SQLAlchemyError as exc:
                log.warning("project %d: cannot record its pending events in the state database (%s); events lost "
                            "if this process dies are recovered only by Start training", project, exc)
            self._held[project] = 1

    def release(self, project: int | None) -> None:
        if not self.enabled or project is None:
            return
        with self._lock:
            count = self._held.get(project, 0) - 1
            if count > 0:
                self._held[project] = count
                return
            self._held.pop(project, None)
            try:
                self._alive().execute(delete(schema.pending).where(schema.pending.c.project_id == project,
                                                                   schema.pending.c.token == self.token))
            except SQLAlchemyError as exc:
                log.warning("project %d: its pending-events row stays (%s); a /setup will take it for lost events "
                            "once this process is gone", project, exc)

    def _others(self, project: int) -> list[tuple[str, int, bool]]:
        """Other processes' rows of `project`: (token, lock key, alive)."""
        with self.db.connect() as conn:
            rows = conn.execute(select(schema.pending.c.token, schema.pending.c.lock_key)
                                .where(schema.pending.c.project_id == project,
                                       schema.pending.c.token != self.token)).all()
            conn.commit()
            if not rows:
                return []
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            found = []
            for token, key in rows:
                taken = conn.execute(text("SELECT pg_try_advisory_lock(:namespace, :key)"),
                                     {"namespace": schema.PENDING_NAMESPACE, "key": key}).scalar()
                if taken:  # its process is gone: the lock was free
                    conn.execute(text("SELECT pg_advisory_unlock(:namespace, :key)"),
                                 {"namespace": schema.PENDING_NAMESPACE, "key": key})
                found.append((token, key, not taken))
            return found

    def others_live(self, project: int) -> bool:
        if not self.enabled:
            return False
        try:
            return any(alive for _, _, alive in self._others(project))
        except SQLAlchemyError as exc:
            log.warning("project %d: cannot read other replicas' pending events (%s)", project, exc)
            return False

    def claim_orphans(self, project: int) -> list[str]:
        """Rows of `project` left by dead processes, removed now: their events were lost."""
        if not self.enabled:
            return []
        try:
            dead = [token for token, _, alive in self._others(project) if not alive]
            if dead:
                with self.db.begin() as conn:
                    conn.execute(delete(schema.pending).where(schema.pending.c.project_id == project,
                                                              schema.pending.c.token.in_(dead)))
            return dead
        except SQLAlchemyError as exc:
            log.warning("project %d: cannot claim lost events' rows (%s)", project, exc)
            return []

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                try:
                    self._session.execute(delete(schema.pending).where(schema.pending.c.token == self.token))
                    self._session.close()
                except SQLAlchemyError:
                    pass
                self._session = None
            self._held.clear()
