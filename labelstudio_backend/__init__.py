"""labelstudio_backend: the Label Studio ML backend of ntt-label, a thin adapter over ntt_engine.

    python -m labelstudio_backend --host 127.0.0.1 --port 9090          # development server
    gunicorn -c python:labelstudio_backend.gunicorn_conf labelstudio_backend.wsgi:app
    python -m labelstudio_backend prelabel --project 4 [--ray]            # bulk pre-labelling

See web/app.py for the routes and settings.py for the environment variables.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    """create_app and Settings on first use: importing one sub-module (say labelstudio.regions) loads no Flask app."""
    if name == "create_app":
        from labelstudio_backend.web.app import create_app
        return create_app
    if name == "Settings":
        from labelstudio_backend.settings import Settings
        return Settings
    raise AttributeError(f"module 'labelstudio_backend' has no attribute {name!r}")
