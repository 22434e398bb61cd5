"""The objects one backend process holds: settings, ONE engine (models loaded once), project store, image loader,
Label Studio API client and metrics. Created by the app factory (or the prelabel CLI); nothing here is global."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from typing import Callable

from labelstudio_backend.fetch.images import ImageLoader
from labelstudio_backend.labelstudio.client import LabelStudioAPI
from labelstudio_backend.labelstudio.label_config import LabelConfig, LabelConfigError, parse_label_config
from labelstudio_backend.metrics import Metrics
from labelstudio_backend.settings import Settings
from labelstudio_backend.store.projects import ProjectState
from labelstudio_backend.store.per_project import PerProject
from labelstudio_backend.store.selection import open_project_store
from ntt_engine import Engine

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter
ENGINE_RETRY_S = 30.0  # after a failed build (e.g. a missing checkpoint) try again at most this often


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for this process (mallopt M_ARENA_MAX), like MALLOC_ARENA_MAX does at start.

    glibc gives threads their own arenas (up to 8 per core) and an arena keeps its high-water mark: every request
    thread that once ran a prediction would keep that prediction's activations (hundreds of MB with SAM) allocated.
    Measured with the load test (fast preset, gunicorn gthread): 2 arenas cut the peak RSS per worker by a quarter and
    its growth over a second wave of requests five-fold. No effect where MALLOC_ARENA_MAX is set or libc is not
    glibc. Returns True when the cap was applied."""
    if arenas <= 0 or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, int(arenas)))


class EngineUnavailable(RuntimeError):
    """The models are still loading, or failed to load (the message says why and what to fetch)."""


class Runtime:
    def __init__(self, settings: Settings, engine_factory: Callable[[], Engine] | None = None):
        self.settings = settings
        self.metrics = Metrics()
        self.api = LabelStudioAPI(settings.label_studio_url, settings.label_studio_api_key, settings.api_timeout) \
            if settings.label_studio_url and settings.label_studio_api_key else None
        self.images = ImageLoader(settings, self.api)
        self.store = open_project_store(settings, self.engine)
        self.gauges = PerProject()  # /metrics' per-project figures, recomputed only when the project changed
        self.prometheus_samples = PerProject()  # the same figures as Prometheus sample lines
        self.versions = PerProject()  # /versions' per-project model_version and last change
        self._engine_factory = engine_factory or (lambda: Engine(settings.engine_config()))
        self._engine: Engine | None = None
        self._engine_error: str | None = None
        self._engine_failed_at = 0.0
        self._engine_lock = threading.Lock()
        self._engine_ready = threading.Event()

    # ----- the engine, built once -----
    def engine(self) -> Engine:
        if self._engine is not None:
            return self._engine
        with self._engine_lock:
            if self._engine is not None:
                return self._engine
            if self._engine_error and time.monotonic() - self._engine_failed_at < ENGINE_RETRY_S:
                raise EngineUnavailable(self._engine_error)
            started = time.perf_counter()
            try:
                engine = self._engine_factory()
            except Exception as exc:  # noqa: BLE001 - any load failure is reported on /setup and /predict
                self._engine_error = f"the models could not be loaded: {exc}"
                self._engine_failed_at = time.monotonic()
                log.error("%s", self._engine_error)
                raise EngineUnavailable(self._engine_error) from exc
            self._engine, self._engine_error = engine, None
            self.metrics.time("engine_load", time.perf_counter() - started)
            log.info("engine %s ready in %.1f s (encoder %s, proposer %s)", engine.model_id,
                     time.perf_counter() - started, engine.encoder.name, engine.proposer.name)
            self._engine_ready.set()
            return engine

    def start_preload(self) -> None:
        def load() -> None:
            try:
                self.engine()
            except EngineUnavailable:
                pass  # already logged; requests will report it

        threading.Thread(target=load, name="ntt-engine-load", daemon=True).start()

    def wait_engine(self, timeout: float) -> Engine:
        """The engine if it is (or becomes) ready within `timeout` s; builds it here when nobody else is."""
        if self._engine is not None:
            return self._engine
        if not self._engine_lock.locked():
            return self.engine()
        if self._engine_ready.wait(timeout):
            return self.engine()
        raise EngineUnavailable(f"the models are still loading (more than {timeout:.1f} s so far); retry shortly")

    @property
    def engine_status(self) -> str:
        if self._engine is not None:
            return "ready"
        if self._engine_error:
            return "error"
        return "loading" if self._engine_lock.locked() else "not loaded"

    @property
    def engine_error(self) -> str | None:
        return self._engine_error

    # ----- per-project helpers -----
    def label_config(self, state: ProjectState, explicit: str | None = None) -> LabelConfig:
        """The request's config when it parses, else the one stored at /setup."""
        if explicit is not None and not isinstance(explicit, str):
            raise LabelConfigError(f"the label config must be XML text, got a {type(explicit).__name__}")
        if explicit:
            try:
                return parse_label_config(explicit)
            except LabelConfigError:
                if not state.label_config:
                    raise
                log.debug("project %d: request config unusable, using the stored one", state.project_id)
        if not state.label_config:
            raise LabelConfigError(f"project {state.project_id}: no label config known yet (Label Studio sends it "
                                   "on /setup and /predict)")
        return parse_label_config(state.label_config)
