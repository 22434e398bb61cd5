"""A least-recently-used cache bounded in bytes (per-image analyses and embeddings)."""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any, Generic, Hashable, TypeVar

import numpy as np
import torch

V = TypeVar("V")


def estimate_nbytes(value: Any) -> int:
    """Bytes held by tensors / arrays inside `value` (dataclasses, dicts, sequences), recursively."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(estimate_nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return sum(estimate_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(estimate_nbytes(v) for v in value)
    return 0


class ByteLRU(Generic[V]):
    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        size = estimate_nbytes(value)
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            if size > self.capacity_bytes:
                return  # would evict everything and still not fit
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.capacity_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes
