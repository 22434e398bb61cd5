"""gunicorn settings from the label-studio-ml environment names: HOST (default 0.0.0.0), PORT (default 9090), WORKERS,
THREADS; GUNICORN_BIND overrides HOST:PORT.

    gunicorn -c python:labelstudio_backend.gunicorn_conf labelstudio_backend.wsgi:app
"""
import os

_host = os.environ.get("HOST", "").strip()
if not _host or "/" in _host:  # HOST is also Label Studio's public-URL variable: only a bare address counts here
    _host = "0.0.0.0"
bind = os.environ.get("GUNICORN_BIND") or f"{_host}:{os.environ.get('PORT', '9090')}"
workers = int(os.environ.get("WORKERS", "1"))
threads = int(os.environ.get("THREADS", "8"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))  # model loading and big predict batches take a while
graceful_timeout = 30
preload_app = False  # each worker loads its own models and starts its own sync thread
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
