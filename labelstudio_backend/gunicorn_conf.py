"""gunicorn settings, read through `Settings` like everything else: HOST (default 0.0.0.0) and PORT (default 9090),
or GUNICORN_BIND; WORKERS, THREADS, LOG_LEVEL, GUNICORN_TIMEOUT; NTT_DEVICES spreads the workers over several GPUs
(devices.py). A malformed value stops gunicorn with its name.

    gunicorn -c python:labelstudio_backend.gunicorn_conf labelstudio_backend.wsgi:app
"""
from labelstudio_backend.devices import post_fork, pre_fork  # noqa: F401  (gunicorn hooks: NTT_DEVICES)
from labelstudio_backend.settings import Settings

_settings = Settings.from_env()

bind = _settings.bind
workers = _settings.workers
threads = _settings.threads
worker_class = "labelstudio_backend.gunicorn_worker.BufferedThreadWorker"  # gthread, requests read whole first
timeout = _settings.gunicorn_timeout
graceful_timeout = 30
preload_app = False  # each worker loads its own models and starts its own sync thread
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
