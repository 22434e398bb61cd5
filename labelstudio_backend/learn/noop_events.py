"""Is an event a change? The comparisons that keep the memory revision (hence model_version) still on a duplicate,
no-op or out-of-order event (pure functions over the memory and the project state)."""
from __future__ import annotations

from datetime import datetime

import numpy as np

from labelstudio_backend.store.projects import AnnotationRecord, ProjectSnapshot
from ntt_engine import Engine
from ntt_engine.memory import MemoryEntry


def same_entries(memory, ref: str, entries: list[MemoryEntry]) -> bool:
    """True when `ref` already holds exactly these entries (a duplicate or no-op event)."""
    if ref not in memory or ref in memory.negative_images:
        return False
    current = memory.entries(ref)
    return len(current) == len(entries) and all(
        a.label == b.label and a.negative == b.negative and np.float32(a.level) == np.float32(b.level)
        and np.array_equal(np.asarray(a.vector, np.float32), np.asarray(b.vector, np.float32))
        for a, b in zip(current, entries))


def same_negative(engine: Engine, snap: ProjectSnapshot, ref: str, previous: AnnotationRecord | None,
                   updated_at: str | None) -> bool:
    """True when `ref` is already this negative image. Without negative mining a negative image is only its id;
    with it, the mined vectors depend on the memory, so only an identical event (same updated_at) is a duplicate."""
    if ref not in snap.memory.negative_images:
        return False
    if not engine.config.use_negatives:
        return not snap.memory.entries(ref)
    return previous is not None and previous.kind == "negative" and updated_at is not None and \
        previous.updated_at == updated_at


def is_older(incoming: str | None, stored: str | None) -> bool:
    """True when `incoming` is strictly earlier than `stored` (Label Studio's ISO updated_at)."""
    try:
        return datetime.fromisoformat(str(incoming)) < datetime.fromisoformat(str(stored))
    except (TypeError, ValueError):
        return False
