"""gunicorn settings from the label-studio-ml environment names: WORKERS, THREADS, PORT (default 9090).

    gunicorn -c python:labelstudio_backend.gunicorn_conf labelstudio_backend.wsgi:app
"""
import os

bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '9090')}"
workers = int(os.environ.get("WORKERS", "1"))
threads = int(os.environ.get("THREADS", "8"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))  # model loading and big predict batches take a while
graceful_timeout = 30
preload_app = False  # each worker loads its own models and starts its own sync thread
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
