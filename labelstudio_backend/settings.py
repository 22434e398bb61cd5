"""Backend settings from the environment (the label-studio-ml ecosystem's names, plus NTT_* for this backend)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # ntt_engine loads torch: gunicorn's master reads these settings without it
    from ntt_engine import EngineConfig


DEFAULT_MEMORY_LENGTH = 30  # references per class matching uses (NTT_MAX_REFERENCES_PER_CLASS)


class SettingsError(ValueError):
    """A malformed environment variable; the message names it."""


def _first(env: Mapping[str, str], *names: str, default: str = "") -> str:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return default


def _parsed(env: Mapping[str, str], name: str, default, parse, what: str):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None


def _devices(env: Mapping[str, str]) -> tuple[str, ...]:
    from labelstudio_backend.devices import parse_devices

    try:
        return parse_devices(env.get("NTT_DEVICES"))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    return _parsed(env, name, default, int, "an integer")


def _memory_length(env: Mapping[str, str]) -> int:
    if env.get("NTT_MAX_REFERENCES_PER_CLASS", "").strip().lower() == "none":
        return 0
    return _int(env, "NTT_MAX_REFERENCES_PER_CLASS", DEFAULT_MEMORY_LENGTH)


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    return _parsed(env, name, default, float, "a number")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _bind(env: Mapping[str, str]) -> str:
    """gunicorn's address: GUNICORN_BIND, else HOST:PORT (HOST default 0.0.0.0, PORT default 9090)."""
    host = env.get("HOST", "").strip()
    if not host or "/" in host:  # HOST is also Label Studio's public-URL variable: only a bare address counts here
        host = "0.0.0.0"
    return _first(env, "GUNICORN_BIND") or f"{host}:{_first(env, 'PORT', default='9090')}"


# how many controls one predicted object fills: "one" (the most detailed offering its label) or "all" of them
REGION_FILLS = ("one", "all")

STATE_URL_SCHEMES = ("sqlite:///", "postgresql://", "postgres://", "postgresql+psycopg://")


@dataclass(frozen=True)
class Settings:
    label_studio_url: str = ""  # e.g. http://127.0.0.1:8080, no trailing slash
    label_studio_api_key: str = ""  # a personal access token (JWT refresh token) or a legacy token
    model_dir: Path = Path("model_dir")
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    log_level: str = "INFO"
    workers: int = 1
    threads: int = 8
    bind: str = "0.0.0.0:9090"  # gunicorn only (GUNICORN_BIND, else HOST:PORT); the dev server takes --host/--port
    gunicorn_timeout: int = 300  # GUNICORN_TIMEOUT: model loading and big predict batches take a while
    preset: str = "fast"
    config_file: Path | None = None  # NTT_CONFIG: JSON {"preset": ..., overrides}; wins over NTT_PRESET
    device: str | None = None  # NTT_DEVICE overrides the config's device ("cpu", "cuda", "auto")
    devices: tuple[str, ...] = ()  # NTT_DEVICES: gunicorn workers spread over these (devices.py)
    # NTT_SCORE_THRESHOLD: one threshold for every class of every project; unset (None): per-class thresholds
    # calibrated from corrections (predict/thresholds.py, 0.5 until a class has observations). /setup
    # extra_params {"score_threshold": x} sets one for a project and wins over both
    score_threshold: float | None = None
    # NTT_REGION_CONTROLS (one of REGION_FILLS): "one" region per predicted object, in the config's most detailed
    # control (brush, else polygon, else rectangle), or "all": one in every control offering its label;
    # extra_params {"region_controls": ...} wins
    region_controls: str = "one"
    # NTT_MAX_REFERENCES_PER_CLASS: the memory length per class, as in the method (its 30-shot setting): matching
    # uses at most this many references of each class, the rest are held back (kept); 0 or "none": every reference.
    # Measured (docs/state.md): a project's cost per annotation stays flat with it, and on the effort benchmark a
    # cap of 4 or 10 labels as well as none; None: the engine config's
    max_references_per_class: int | None = DEFAULT_MEMORY_LENGTH
    keep_references: str | None = None  # NTT_KEEP_REFERENCES: "first" or "latest" (None: the engine config's)
    local_files_root: Path | None = None  # LOCAL_FILES_DOCUMENT_ROOT: read /data/local-files/ from disk
    allowed_hosts: tuple[str, ...] = ()  # extra hosts images may be fetched from; "*.example.com" and "*" work
    allow_private_networks: bool = False  # let allowed hosts resolve to private/loopback/link-local addresses
    download_max_bytes: int = 50 * 1024 * 1024
    download_timeout: float = 30.0  # seconds for one whole download, redirects included
    api_timeout: float = 30.0  # seconds per Label Studio API call
    preload: bool = True  # start loading the models when the app is created, not on the first request
    queue_size: int = 10_000  # webhook events waiting for the background worker
    queue_max_bytes: int = 128 * 1024 * 1024  # NTT_QUEUE_MAX_BYTES: what those events may hold (payload mode)
    webhook_max_bytes: int = 32 * 1024 * 1024  # NTT_WEBHOOK_MAX_BYTES: one webhook body (brush RLEs are large)
    lock_timeout: float = 600.0  # seconds to wait for a project's lock
    # NTT_STATE_URL: where project state lives (store/selection.py): "" = SQLite in MODEL_DIR, "files" = the
    # per-project files of earlier versions, or a database URL (sqlite:///path, postgresql://user@host/db)
    state_url: str = ""
    project_cache: int = 256  # NTT_PROJECT_CACHE: projects whose memory one process keeps loaded (LRU)
    store_retry_s: float = 300.0  # NTT_STORE_RETRY_S: an event is retried this long while the database is unreachable
    # NTT_REQUEST_READ_TIMEOUT_S: gunicorn's worker (gunicorn_worker.py) reads each request whole before a thread gets
    # it; one still incomplete after this long is answered 408 and closed
    request_read_timeout_s: float = 60.0
    # /predict requests one process admits at once (running + waiting for the engine); more get 503 + Retry-After.
    # None: THREADS - 2 (at least 1), so that /health, /setup and /webhook always find a free thread
    max_pending_predicts: int | None = None
    malloc_arenas: int = 2  # NTT_MALLOC_ARENAS: glibc malloc arenas per process (0: glibc's default, 8 per core)
    # freshness (store/in_flight.py, predict/refresher.py): bounded waits for unapplied events, and the background refresh
    webhook_wait: float = 0.8  # NTT_WEBHOOK_APPLY_WAIT_S: /webhook waits this long for its event (LS waits 1 s)
    setup_wait: float = 2.0  # NTT_SETUP_WAIT_S: /setup waits for the project's pending events (LS waits 3 s)
    predict_wait: float = 20.0  # NTT_PREDICT_WAIT_S: /predict likewise (LS waits 100 s)
    refresh_tasks: int = 20  # NTT_REFRESH_TASKS: tasks re-predicted after each memory change (0: off)
    learn_from_corrections: bool | None = None  # NTT_LEARN_FROM_CORRECTIONS; None: the engine config's (on)
    calibrate_leave_one_out: bool = True  # NTT_CALIBRATE_LEAVE_ONE_OUT: observations from hand-drawn references
    redraw_iou: float = 0.9  # NTT_REDRAW_IOU: a kept prediction below this IoU with the final mask was redrawn

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)

    @property
    def predict_slots(self) -> int:
        if self.max_pending_predicts is not None:
            return self.max_pending_predicts
        return max(1, self.threads - 2)

    @property
    def trusts_payloads(self) -> bool:
        """Without an API key the worker has nothing to verify webhooks against and uses their payload."""
        return not self.label_studio_api_key

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        root = _first(env, "LOCAL_FILES_DOCUMENT_ROOT", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        config = _first(env, "NTT_CONFIG")
        hosts = tuple(h.strip().lower() for h in env.get("NTT_ALLOWED_HOSTS", "").split(",") if h.strip())
        values = dict(
            label_studio_url=_first(env, "LABEL_STUDIO_URL", "LABEL_STUDIO_HOST").rstrip("/"),
            label_studio_api_key=_first(env, "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"),
            model_dir=Path(_first(env, "MODEL_DIR", default="model_dir")),
            basic_auth_user=env.get("BASIC_AUTH_USER", ""),
            basic_auth_pass=env.get("BASIC_AUTH_PASS", ""),
            log_level=_first(env, "LOG_LEVEL", default="INFO").upper(),
            workers=_int(env, "WORKERS", 1),
            threads=_int(env, "THREADS", 8),
            bind=_bind(env),
            gunicorn_timeout=_int(env, "GUNICORN_TIMEOUT", 300),
            preset=_first(env, "NTT_PRESET", default="fast"),
            config_file=Path(config) if config else None,
            device=_first(env, "NTT_DEVICE") or None,
            devices=_devices(env),
            score_threshold=_float(env, "NTT_SCORE_THRESHOLD", None),
            redraw_iou=_float(env, "NTT_REDRAW_IOU", 0.9),
            region_controls=(_first(env, "NTT_REGION_CONTROLS") or "one").strip().lower(),
            max_references_per_class=_memory_length(env),
            keep_references=(_first(env, "NTT_KEEP_REFERENCES") or None),
            local_files_root=Path(root) if root else None,
            allowed_hosts=hosts,
            allow_private_networks=_bool(env, "NTT_ALLOW_PRIVATE_NETWORKS", False),
            download_max_bytes=_int(env, "NTT_DOWNLOAD_MAX_BYTES", 50 * 1024 * 1024),
            download_timeout=_float(env, "NTT_DOWNLOAD_TIMEOUT", 30.0),
            api_timeout=_float(env, "NTT_API_TIMEOUT", 30.0),
            preload=_bool(env, "NTT_PRELOAD", True),
            queue_size=_int(env, "NTT_QUEUE_SIZE", 10_000),
            queue_max_bytes=_int(env, "NTT_QUEUE_MAX_BYTES", 128 * 1024 * 1024),
            webhook_max_bytes=_int(env, "NTT_WEBHOOK_MAX_BYTES", 32 * 1024 * 1024),
            lock_timeout=_float(env, "NTT_LOCK_TIMEOUT", 600.0),
            state_url=_first(env, "NTT_STATE_URL"),
            project_cache=_int(env, "NTT_PROJECT_CACHE", 256),
            store_retry_s=_float(env, "NTT_STORE_RETRY_S", 300.0),
            request_read_timeout_s=_float(env, "NTT_REQUEST_READ_TIMEOUT_S", 60.0),
            max_pending_predicts=_int(env, "NTT_MAX_PENDING_PREDICTS", None),
            malloc_arenas=_int(env, "NTT_MALLOC_ARENAS", 2),
            webhook_wait=_float(env, "NTT_WEBHOOK_APPLY_WAIT_S", 0.8),
            setup_wait=_float(env, "NTT_SETUP_WAIT_S", 2.0),
            predict_wait=_float(env, "NTT_PREDICT_WAIT_S", 20.0),
            refresh_tasks=_int(env, "NTT_REFRESH_TASKS", 20),
            learn_from_corrections=_bool(env, "NTT_LEARN_FROM_CORRECTIONS", None),
            calibrate_leave_one_out=_bool(env, "NTT_CALIBRATE_LEAVE_ONE_OUT", True),
        )
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        if self.workers < 1 or self.threads < 1 or self.gunicorn_timeout < 1:
            raise SettingsError("WORKERS, THREADS and GUNICORN_TIMEOUT must be >= 1")
        if self.label_studio_url and not self.label_studio_url.startswith(("http://", "https://")):
            raise SettingsError(f"LABEL_STUDIO_URL must start with http:// or https://, got {self.label_studio_url!r}")
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if not 0.0 < self.redraw_iou <= 1.0:
            raise SettingsError(f"NTT_REDRAW_IOU must be in (0, 1], got {self.redraw_iou}")
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise SettingsError(f"NTT_SCORE_THRESHOLD must be in [0, 1], got {self.score_threshold}")
        if self.max_references_per_class is not None and self.max_references_per_class < 0:
            raise SettingsError("NTT_MAX_REFERENCES_PER_CLASS must be >= 1 (0 or none: every reference)")
        if self.keep_references not in (None, "first", "latest"):
            raise SettingsError(f"NTT_KEEP_REFERENCES must be 'first' or 'latest', got {self.keep_references!r}")
        if self.download_max_bytes <= 0 or self.download_timeout <= 0:
            raise SettingsError("NTT_DOWNLOAD_MAX_BYTES and NTT_DOWNLOAD_TIMEOUT must be positive")
        if self.queue_max_bytes <= 0 or self.webhook_max_bytes <= 0:
            raise SettingsError("NTT_QUEUE_MAX_BYTES and NTT_WEBHOOK_MAX_BYTES must be positive")
        if self.region_controls not in REGION_FILLS:
            raise SettingsError(f"NTT_REGION_CONTROLS must be 'one' or 'all', got {self.region_controls!r}")
        if not self.request_read_timeout_s > 0:
            raise SettingsError("NTT_REQUEST_READ_TIMEOUT_S must be positive")
        if self.max_pending_predicts is not None and self.max_pending_predicts < 1:
            raise SettingsError("NTT_MAX_PENDING_PREDICTS must be >= 1")
        if min(self.webhook_wait, self.setup_wait, self.predict_wait) < 0:
            raise SettingsError("NTT_WEBHOOK_APPLY_WAIT_S, NTT_SETUP_WAIT_S and NTT_PREDICT_WAIT_S must be >= 0")
        if self.state_url and self.state_url != "files" and not self.state_url.startswith(STATE_URL_SCHEMES):
            raise SettingsError(f"NTT_STATE_URL must be empty (SQLite in MODEL_DIR), 'files', or a URL starting with "
                                f"{', '.join(STATE_URL_SCHEMES)}; got {self.state_url.split('@')[-1]!r}")
        if self.project_cache < 1:
            raise SettingsError("NTT_PROJECT_CACHE must be >= 1")
        if self.refresh_tasks < 0:
            raise SettingsError("NTT_REFRESH_TASKS must be >= 0 (0 turns the refresh off)")

    def engine_config(self) -> EngineConfig:
        """NTT_CONFIG (a JSON file) or NTT_PRESET, with the env's device and per-class cap applied on top."""
        from ntt_engine import EngineConfig

        config = EngineConfig.from_file(self.config_file) if self.config_file else EngineConfig.preset(self.preset)
        changes: dict = {}
        if self.device:
            changes["device"] = self.device
        if self.max_references_per_class is not None:
            changes["max_references_per_class"] = self.max_references_per_class or None  # 0: no cap
        if self.keep_references is not None:
            changes["keep_references"] = self.keep_references
        if self.learn_from_corrections is not None:
            changes["learn_from_corrections"] = self.learn_from_corrections
        return dataclasses.replace(config, **changes) if changes else config
