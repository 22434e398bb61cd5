"""The state database's tables (SQLAlchemy Core) and how a connection to it is opened.

One row per project, per annotation record and per reference: an event writes only the rows it changes, in one
transaction. Every write bumps the project's `generation` and stamps the rows it wrote with it, so a process holding
generation g reloads only the rows stamped after g (another replica's edits, or another gunicorn worker's). Removed
annotations and references stay as rows flagged `removed` (stamped too): a reload must learn of removals.

The tables are created and changed by Alembic migrations (store/migrations), run at start.

SQLite (the default, a file in MODEL_DIR) runs in WAL mode, so readers never wait for the writer; PostgreSQL is named
by NTT_STATE_URL (postgresql://...), driven by psycopg 3.
"""
from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import (BigInteger, Boolean, Column, Float, Index, Integer, LargeBinary, MetaData, Table, Text,
                        create_engine, event, inspect, text)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_SQLITE_NAME = "state.sqlite3"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"  # Alembic's scripts
LOCK_NAMESPACE = 0x4E5454  # "NTT": the first key of this backend's PostgreSQL advisory locks (a project's edit)
PENDING_NAMESPACE = 0x4E5455  # the first key of the locks that say a process with unapplied events is alive

metadata = MetaData()

projects = Table(
    "ntt_projects", metadata,
    Column("project_id", BigInteger, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),  # bumped by every write of the project
    Column("revision", BigInteger, nullable=False),  # the memory's revision (model_version names it)
    Column("next_seq", BigInteger, nullable=False),  # references are ordered by seq: the per-class cap keeps the first
    Column("encoder", Text),  # the encoder the references were pooled with
    Column("settings", Text, nullable=False),  # JSON: label config, thresholds, sync times (store/database.py)
    Column("deleted", Text, nullable=False),  # JSON list of tombstoned annotation ids
    Column("updated_at", Float, nullable=False),
)

annotations = Table(
    "ntt_annotations", metadata,
    Column("project_id", BigInteger, primary_key=True, autoincrement=False),
    Column("key", Text, primary_key=True),  # the Label Studio annotation id
    Column("generation", BigInteger, nullable=False),
    Column("removed", Boolean, nullable=False),
    Column("record", Text),  # JSON of an AnnotationRecord (its calibration observations included)
    Index("ix_ntt_annotations_changes", "project_id", "generation"),
)

references = Table(
    "ntt_references", metadata,
    Column("project_id", BigInteger, primary_key=True, autoincrement=False),
    Column("ref_id", Text, primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("removed", Boolean, nullable=False),
    Column("negative_image", Boolean, nullable=False),
    Column("entries", Text, nullable=False),  # JSON [[label, negative, level], ...], one per vector
    Column("dim", Integer, nullable=False),
    Column("vectors", LargeBinary, nullable=False),  # float32 little-endian, [len(entries), dim]
    Index("ix_ntt_references_changes", "project_id", "generation"),
)


pending = Table(
    "ntt_pending", metadata,  # events a process accepted and has not applied yet (store/pending_rows.py)
    Column("project_id", BigInteger, primary_key=True, autoincrement=False),
    Column("token", Text, primary_key=True),  # the process: pid and a random part
    Column("lock_key", Integer, nullable=False),  # the advisory lock its process holds while it lives
    Column("since", Float, nullable=False),
)


class SchemaError(RuntimeError):
    """The database holds a schema this version of the backend does not know."""


def default_url(model_dir: Path) -> str:
    return f"sqlite:///{Path(model_dir).resolve() / DEFAULT_SQLITE_NAME}"


def driver_url(url: str) -> str:
    """postgresql://... means psycopg 3 (SQLAlchemy's default PostgreSQL driver is psycopg2)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<an unparsable NTT_STATE_URL>"


def open_database(url: str, busy_timeout_s: float) -> Engine:
    """An engine with the tables created. SQLite: WAL, full fsync at commit, waits up to `busy_timeout_s` for a
    writer; a transaction opened with execution option `immediate=True` takes the write lock at BEGIN (so a read
    inside it cannot go stale before the write)."""
    url = driver_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = create_engine(url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False})

        @event.listens_for(db, "connect")
        def _connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cursor.close()

        @event.listens_for(db, "begin")
        def _begin(connection) -> None:
            immediate = connection.get_execution_options().get("immediate")
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
    else:
        db = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8)
    _migrate(db)
    return db


def _migrate(db: Engine) -> None:
    """Bring the database to this backend's schema: Alembic's `upgrade head` (labelstudio_backend/store/migrations),
    one process at a time (SQLite's write lock, or an advisory lock on PostgreSQL). A database written by a newer
    backend is refused, never changed."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    with db.connect() as conn:
        if db.dialect.name == "sqlite":
            conn = conn.execution_options(immediate=True)
        with conn.begin():
            if db.dialect.name == "postgresql":  # replicas starting together: one migrates, the others wait
                conn.execute(text("SELECT pg_advisory_xact_lock(:namespace, 0)"), {"namespace": LOCK_NAMESPACE})
            current = MigrationContext.configure(conn).get_current_revision()
            if current == head:
                return
            if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
                raise SchemaError(f"the state database is at schema revision {current}, which this backend does not "
                                  f"know (its newest is {head}): upgrade the backend, or point NTT_STATE_URL elsewhere")
            config.attributes["connection"] = conn
            if current is None and inspect(conn).has_table("ntt_projects"):
                command.stamp(config, "0001")  # tables of the first database release, made before migrations: 0001
            command.upgrade(config, "head")


def process_key() -> int:
    """Which process an engine belongs to: a forked gunicorn worker must not share its parent's connections."""
    return os.getpid()
