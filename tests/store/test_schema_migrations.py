"""The state database's schema comes from Alembic migrations (labelstudio_backend/store/migrations), run at start:
they must build exactly the tables store/schema.py declares, adopt a database of the first release (tables made
before migrations existed), and refuse one from a newer backend without touching it."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, select, text

from labelstudio_backend.store import schema


def test_the_migrations_build_exactly_the_declared_tables(state_url):
    db = schema.open_database(state_url, 10)
    with db.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
        assert MigrationContext.configure(conn).get_current_revision() == "0001"
    schema.open_database(state_url, 10)  # a second start finds nothing to do


def test_a_database_of_the_first_release_is_adopted_with_its_rows(tmp_path):
    url = schema.default_url(tmp_path)
    first = create_engine(schema.driver_url(url))
    schema.metadata.create_all(first)  # what the first release did, without migrations
    with first.begin() as conn:
        conn.execute(insert(schema.projects).values(project_id=4, generation=3, revision=7, next_seq=2, encoder="e",
                                                    settings="{}", deleted="[]", updated_at=0.0))
    first.dispose()
    db = schema.open_database(url, 10)
    with db.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0001"
        assert conn.execute(select(schema.projects.c.revision)).scalar() == 7


def test_a_database_of_a_newer_backend_is_refused_and_left_alone(tmp_path):
    url = schema.default_url(tmp_path)
    schema.open_database(url, 10).dispose()
    newer = create_engine(schema.driver_url(url))
    with newer.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    newer.dispose()
    with pytest.raises(schema.SchemaError, match="0099.*upgrade the backend"):
        schema.open_database(url, 10)
    with create_engine(schema.driver_url(url)).connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0099"
