"""Alembic migrations of the state database (store/schema.py runs them at start: `upgrade head`)."""
