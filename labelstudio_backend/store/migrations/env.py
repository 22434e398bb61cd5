"""Alembic's environment: run on the connection store/schema.py opens (no alembic.ini: the backend's settings name
the database)."""
from alembic import context

from labelstudio_backend.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying them
with context.begin_transaction():  # inside the caller's transaction: nothing new is begun
    context.run_migrations()
