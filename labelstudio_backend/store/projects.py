"""Per-project state on disk: MODEL_DIR/<project id>/{memory.ntt, state.json, .lock}.

Several gunicorn worker processes share MODEL_DIR. Every change is a read-modify-write under the project's file
lock (fresh load from disk, change, atomic write of memory.ntt then state.json), so no process works on a stale
copy. Readers stat both files before each use (two syscalls) and reload, under the lock, when either moved: a reader
never sees one writer's memory with another's state. Cached memories are never mutated in place: an edit works on a
fresh copy and replaces the cache entry, so in-flight predictions keep a consistent bank.

Crash safety: each file is replaced atomically (temporary file, fsync, rename), so a process killed at any moment
leaves the last complete memory. Writers hold the lock, so a temporary file found under the lock is a dead writer's:
it is removed, and the project is flagged for a resync (with LABEL_STUDIO_API_KEY, the next /setup reads everything
back from Label Studio). A memory newer than its state.json (killed between the two renames) is reconciled: state
records are rebuilt for the memory's references, so no reference is orphaned.

Reads never write: a reader that finds an interrupted write or a corrupt memory repairs its own copy in memory, and
the next edit (under the lock) writes the repair. So reads keep working on a full or read-only disk, and a write that
fails (ENOSPC...) is a ProjectError (503) that leaves the last complete files in place.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol


from ntt_engine import MemoryBank, MemoryFormatError
from ntt_engine.memory import atomic_write_bytes

from labelstudio_backend.store.locks import ProjectLocks

log = logging.getLogger(__name__)

STATE_VERSION = 1
TEMP_PATTERNS = (".memory.ntt.*.tmp", ".state.json.*.tmp")  # what atomic_write leaves behind when killed


class ProjectError(RuntimeError):
    """The project's state cannot be read or written now. `transient`: the database could not be reached (the
    background worker keeps the event and retries; a request is answered 503 with Retry-After)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class MemoryFactory(Protocol):
    def new_memory(self) -> MemoryBank: ...

    def adopt_memory(self, memory: MemoryBank) -> MemoryBank: ...


@dataclass
class AnnotationRecord:
    """What one Label Studio annotation contributed (memory ref id = f"annotation:{id}")."""

    task_id: int | None
    kind: str  # "reference", "negative", or "none" (its regions were all unusable)
    labels: list[str] = field(default_factory=list)
    regions: int = 0
    updated_at: str | None = None  # Label Studio's updated_at: a resync skips unchanged annotations
    negatives: int = 0  # negative examples from the correction of a prediction (learn/corrections.py)
    source: str = "drawn"  # "drawn", "correction <prediction id>", "copy <prediction id>"
    observations: list = field(default_factory=list)  # [label, score, correct] for threshold calibration
    missed: dict = field(default_factory=dict)  # label -> objects no prediction found
    effort: dict = field(default_factory=dict)  # what it cost the annotator (ntt_engine/effort.py); {} for none
    thumbs: list = field(default_factory=list)  # [label, kind] of each gallery thumbnail (store/thumbnails.py)


@dataclass
class ProjectState:
    project_id: int
    label_config: str = ""
    score_threshold: float | None = None  # None: NTT_SCORE_THRESHOLD
    region_controls: str | None = None  # extra_params' "one" | "all"; None: NTT_REGION_CONTROLS
    annotations: dict[str, AnnotationRecord] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)  # tombstones: late events about these are ignored
    revision: int = 0  # the memory's revision when this state was written
    synced_at: float | None = None  # last complete resync from the Label Studio API
    sync_started_at: float | None = None
    updated_at: float = 0.0

    def to_json(self) -> str:
        data = asdict(self)
        data["version"] = STATE_VERSION
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, project_id: int) -> "ProjectState":
        data = json.loads(text)
        data.pop("version", None)
        records = {key: AnnotationRecord(**value) for key, value in (data.pop("annotations", None) or {}).items()}
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["project_id"] = project_id
        return cls(annotations=records, **known)


@dataclass
class ProjectSnapshot:
    state: ProjectState
    memory: MemoryBank


def ref_id(annotation_id: int | str) -> str:
    return f"annotation:{annotation_id}"


class ProjectStore:
    def __init__(self, model_dir: Path, memories: Callable[[], MemoryFactory], lock_timeout: float = 600.0):
        """`memories` returns the engine lazily: loading a memory checks it against the engine's encoder."""
        self.model_dir = Path(model_dir)
        self._memories = memories
        self._lock_timeout = lock_timeout
        self._cache: dict[int, tuple[tuple | None, ProjectSnapshot]] = {}
        self._guard = threading.Lock()
        self._locks = ProjectLocks(self.project_dir, lock_timeout, ProjectError)

    # ----- paths -----
    def project_dir(self, project_id: int) -> Path:
        return self.model_dir / str(int(project_id))

    def projects(self) -> list[int]:
        if not self.model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir.iterdir()
                      if p.name.isascii() and p.name.isdigit() and (p / "state.json").exists())

    def stamps(self) -> dict[int, object]:
        """Every project and a stamp that moves with each of its writes: its files' identity."""
        return {project: self._signature(project) for project in self.projects()}

    def exists(self, project_id: int) -> bool:
        return (self.project_dir(project_id) / "state.json").exists()

    def _signature(self, project_id: int) -> tuple | None:
        """Identity of state.json and memory.ntt (inode, mtime, size); None while the project has no state."""
        directory = self.project_dir(project_id)
        try:
            st = (directory / "state.json").stat()
        except FileNotFoundError:
            return None
        try:
            sm = (directory / "memory.ntt").stat()
            memory = (sm.st_ino, sm.st_mtime_ns, sm.st_size)
        except FileNotFoundError:
            memory = None
        return st.st_ino, st.st_mtime_ns, st.st_size, memory

    # ----- reading -----
    def snapshot(self, project_id: int) -> ProjectSnapshot:
        """The current state and memory; reloaded only when another process (or thread) changed them."""
        signature = self._signature(project_id)
        with self._guard:
            cached = self._cache.get(project_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        if signature is None:  # nothing on disk yet: an empty project, not persisted until its first edit
            snap = ProjectSnapshot(ProjectState(project_id), self._memories().new_memory())
        else:
            with self._locked(project_id):
                snap = self._load(project_id, repair=False)  # repairs its copy only: a read never writes
                signature = self._signature(project_id)
        with self._guard:
            self._cache[project_id] = (signature, snap)
        return snap

    def revision(self, project_id: int) -> int:
        return self.snapshot(project_id).memory.revision

    # ----- changing -----
    @contextmanager
    def edit(self, project_id: int) -> Iterator[ProjectSnapshot]:
        """Yield a fresh copy under the project's lock; on a normal exit write what changed, atomically."""
        with self._locked(project_id):
            if self._signature(project_id) is not None:
                try:
                    snap = self._load(project_id)  # its repairs write: they may fail like any write
                except OSError as exc:
                    raise self._write_failed(project_id, exc) from exc
            else:
                leftovers = self._remove_temporaries(self.project_dir(project_id))
                if leftovers:
                    log.warning("project %d: removed %s left by a writer that died before the first save",
                                project_id, ", ".join(leftovers))
                snap = ProjectSnapshot(ProjectState(project_id), self._memories().new_memory())
            before_state, before_revision = snap.state.to_json(), snap.memory.revision
            yield snap
            changed_memory = snap.memory.revision != before_revision
            snap.state.revision = snap.memory.revision
            if changed_memory or snap.state.to_json() != before_state or self._signature(project_id) is None:
                try:
                    self._write(project_id, snap, changed_memory)
                except OSError as exc:  # ENOSPC, EROFS, EDQUOT...: the last complete files stay in place
                    raise self._write_failed(project_id, exc) from exc
            signature = self._signature(project_id)
        with self._guard:
            self._cache[project_id] = (signature, snap)

    def _write_failed(self, project_id: int, exc: OSError) -> ProjectError:
        log.error("project %d: a write failed: %s", project_id, exc)
        return ProjectError(f"project {project_id}: cannot save to {self.project_dir(project_id)}: "
                            f"{exc.strerror or exc}; the last saved state is kept (free disk space or fix the "
                            "permissions, then retry)")

    def _write(self, project_id: int, snap: ProjectSnapshot, memory_changed: bool) -> None:
        directory = self.project_dir(project_id)
        memory_path = directory / "memory.ntt"
        if memory_changed or not memory_path.exists():
            atomic_write_bytes(memory_path, snap.memory.to_bytes())
        snap.state.updated_at = time.time()
        atomic_write_bytes(directory / "state.json", snap.state.to_json().encode())

    def _locked(self, project_id: int):
        return self._locks.held(project_id)

    def _load(self, project_id: int, repair: bool = True) -> ProjectSnapshot:
        """Under the lock. A memory built by another encoder (NTT_PRESET changed), or a corrupt one, is set aside
        and the project starts over empty, flagged for a resync from Label Studio. A file that cannot be read right
        now (permissions, I/O error) is a 503 and changes nothing. `repair=False` (reads): the same repairs, on the
        returned copy only; nothing on disk changes."""
        directory = self.project_dir(project_id)
        state_path, memory_path = directory / "state.json", directory / "memory.ntt"
        leftovers = self._remove_temporaries(directory) if repair else self._temporaries(directory)
        try:
            state = ProjectState.from_json(state_path.read_text(), project_id)
        except (OSError, ValueError, TypeError) as exc:
            raise ProjectError(f"project {project_id}: unreadable {state_path}: {exc}") from exc
        factory = self._memories()
        if not memory_path.exists():
            memory = factory.new_memory()
            memory.revision = state.revision  # never hand out an older model_version
            snap = ProjectSnapshot(state, memory)
            if leftovers:
                self._recover(project_id, snap, leftovers, repair)
            return snap
        try:
            data = memory_path.read_bytes()
        except OSError as exc:
            raise ProjectError(f"project {project_id}: cannot read {memory_path}: {exc.strerror or exc}") from exc
        try:
            memory = factory.adopt_memory(MemoryBank.from_bytes(data, str(memory_path)))
        except (MemoryFormatError, KeyError, TypeError, ValueError, AttributeError) as exc:
            # KeyError & co.: well-formed JSON metadata missing a field (e.g. "references") is corrupt too
            reason = exc if isinstance(exc, MemoryFormatError) else f"corrupt memory file ({type(exc).__name__}: {exc})"
            memory = factory.new_memory()
            memory.revision = state.revision + 1  # keep model_version moving forward, never reuse one
            state.annotations.clear()
            state.synced_at = None
            state.revision = memory.revision
            if not repair:
                log.error("project %d: %s; serving an empty memory until the next write sets it aside", project_id,
                          reason)
                return ProjectSnapshot(state, memory)
            aside = memory_path.with_name(f"memory.ntt.incompatible-{int(time.time())}")
            memory_path.replace(aside)
            log.error("project %d: %s; moved it to %s and starting an empty memory (a resync from Label Studio "
                      "rebuilds it when LABEL_STUDIO_API_KEY is set)", project_id, reason, aside.name)
            atomic_write_bytes(memory_path, memory.to_bytes())
            atomic_write_bytes(state_path, state.to_json().encode())
            return ProjectSnapshot(state, memory)
        snap = ProjectSnapshot(state, memory)
        if leftovers or memory.revision != state.revision:
            self._recover(project_id, snap, leftovers, repair)
        return snap

    @staticmethod
    def _temporaries(directory: Path) -> list[str]:
        return [path.name for pattern in TEMP_PATTERNS for path in directory.glob(pattern)]

    @staticmethod
    def _remove_temporaries(directory: Path) -> list[str]:
        """Under the lock: temporary files of writers that died before their rename."""
        removed = []
        for pattern in TEMP_PATTERNS:
            for path in directory.glob(pattern):
                try:
                    path.unlink()
                    removed.append(path.name)
                except FileNotFoundError:
                    pass
        return removed

    def _recover(self, project_id: int, snap: ProjectSnapshot, leftovers: list[str], write: bool = True) -> None:
        """Under the lock, after a writer died mid-write: keep the last complete memory, make state.json agree with
        it, and flag the project for a resync (an event being applied, or queued, may have been lost). `write=False`:
        on the snapshot only (a read); the next edit repeats the repair and writes it."""
        state, memory = snap.state, snap.memory
        if memory.revision < state.revision:  # an older memory file than its state (restored from a backup?)
            log.warning("project %d: memory revision %d is older than state.json's %d; moving to revision %d so "
                        "that no model_version is reused", project_id, memory.revision, state.revision,
                        state.revision + 1)
            memory.revision = state.revision + 1
            if write:
                atomic_write_bytes(self.project_dir(project_id) / "memory.ntt", memory.to_bytes())
        rebuilt, stale = [], []
        for ref in sorted(memory.reference_ids()):
            key = ref.split(":", 1)[1] if ref.startswith("annotation:") else None
            if key is None or key in state.annotations:
                continue
            entries = memory.entries(ref)
            negative = ref in memory.negative_images
            state.annotations[key] = AnnotationRecord(None, "negative" if negative else "reference",
                                                      sorted({e.label for e in entries}), len(entries), None)
            rebuilt.append(key)
        for key, record in state.annotations.items():
            if record.kind in ("reference", "negative") and ref_id(key) not in memory:
                record.updated_at = None  # the next event or resync about it is applied, whatever its date
                stale.append(key)
        state.revision = memory.revision
        state.synced_at = state.sync_started_at = None
        log.warning("project %d: recovered from an interrupted write (%s): memory revision %d kept, %d state "
                    "record(s) rebuilt, %d marked stale; a resync from Label Studio restores any lost event (with "
                    "LABEL_STUDIO_API_KEY: at the next /setup, or Start training)", project_id,
                    ", ".join(leftovers) or "memory newer than state.json", memory.revision, len(rebuilt), len(stale))
        if write:
            state.updated_at = time.time()
            atomic_write_bytes(self.project_dir(project_id) / "state.json", state.to_json().encode())
