"""What goes into the state database's rows and back, and which rows an edit changed (store/database.py)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from sqlalchemy import Table
from sqlalchemy.engine import Connection

from labelstudio_backend.store.projects import AnnotationRecord, ProjectSnapshot, ProjectState
from ntt_engine.memory import MemoryEntry

SETTINGS = ("label_config", "score_threshold", "region_controls", "synced_at", "sync_started_at")
_RECORD_FIELDS = frozenset(f.name for f in fields(AnnotationRecord))


@dataclass
class Changes:
    """The rows an edit changed: records and references written or removed, and whether the project row moved."""

    records: list[str] = field(default_factory=list)
    removed_records: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # in the memory's order: they get increasing seqs
    removed_references: list[str] = field(default_factory=list)
    project: bool = False

    def __bool__(self) -> bool:
        return bool(self.records or self.removed_records or self.references or self.removed_references
                    or self.project)


def settings_of(state: ProjectState) -> dict:
    return {name: getattr(state, name) for name in SETTINGS}


def diff(base: ProjectSnapshot, work: ProjectSnapshot) -> Changes:
    """What `work` changed from `base`, by identity: linear in the project's size, but with no serialising."""
    before, after = base.state.annotations, work.state.annotations
    changes = Changes(records=[key for key, record in after.items() if before.get(key) is not record],
                      removed_records=[key for key in before if key not in after])
    for ref in work.memory.reference_order():
        entries, negative_image = work.memory.stored_as(ref)
        old_entries, old_negative_image = base.memory.stored_as(ref)
        if entries is not old_entries or negative_image != old_negative_image:
            changes.references.append(ref)
    changes.removed_references = sorted(base.memory.reference_ids() - work.memory.reference_ids())
    changes.project = (settings_of(base.state) != settings_of(work.state) or base.state.deleted != work.state.deleted
                       or base.memory.revision != work.memory.revision
                       or base.memory.encoder_name != work.memory.encoder_name)
    return changes


def record_to_json(record: AnnotationRecord) -> str:
    return json.dumps(asdict(record), sort_keys=True)


def record_from_json(body: str) -> AnnotationRecord:
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError(f"an annotation record must be a JSON object, got {type(data).__name__}")
    return AnnotationRecord(**{key: value for key, value in data.items() if key in _RECORD_FIELDS})


def encode_reference(project_id: int, ref_id: str, entries: list[MemoryEntry], negative_image: bool, generation: int,
                     seq: int) -> dict:
    dim = int(entries[0].vector.shape[0]) if entries else 0
    vectors = np.stack([e.vector for e in entries]).astype("<f4") if entries else np.zeros((0, 0), "<f4")
    return {"project_id": project_id, "ref_id": ref_id, "generation": generation, "seq": seq, "removed": False,
            "negative_image": bool(negative_image), "dim": dim, "vectors": vectors.tobytes(),
            "entries": json.dumps([[e.label, bool(e.negative), float(e.level)] for e in entries])}


def decode_reference(row) -> list[MemoryEntry]:
    """A reference row's entries; ValueError when the row does not hold what it says (wrong vector length...)."""
    meta = json.loads(row.entries)
    if not isinstance(meta, list) or not all(isinstance(m, list) and len(m) == 3 and isinstance(m[0], str)
                                             for m in meta):
        raise ValueError("its entries are not a list of [label, negative, level]")
    count, dim, blob = len(meta), int(row.dim), bytes(row.vectors)
    if count and dim <= 0:
        raise ValueError(f"{count} entries with vectors of {dim} dims")
    if len(blob) != count * dim * 4:
        raise ValueError(f"{count} vectors of {dim} float32 need {count * dim * 4} bytes, the row holds {len(blob)}")
    vectors = np.frombuffer(blob, "<f4").reshape(count, dim).astype(np.float32)
    return [MemoryEntry(str(label), vectors[i], bool(negative), float(level))
            for i, (label, negative, level) in enumerate(meta)]


def upsert(conn: Connection, table: Table, keys: list[str]):
    """INSERT ... ON CONFLICT (keys) DO UPDATE for every other column, in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=keys, set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys})
