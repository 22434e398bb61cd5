"""WSGI entry point for gunicorn: `gunicorn -c python:labelstudio_backend.gunicorn_conf labelstudio_backend.wsgi:app`.

Each gunicorn worker imports this module and builds its own app (models, worker thread); do not use gunicorn's
--preload, threads do not survive the fork.
"""
from labelstudio_backend.web.app import create_app

app = create_app()
