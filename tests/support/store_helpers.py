"""Small pieces the state-store tests share: a memory factory standing in for the engine, and entries."""
from __future__ import annotations

import numpy as np

from ntt_engine import MemoryBank
from ntt_engine.memory import MemoryEntry

DIM = 8


class Memories:
    """A stand-in for the engine's memory factory: the store only needs new and adopted banks."""

    def __init__(self, encoder: str = "enc-a", cap: int | None = None):
        self.encoder, self.cap = encoder, cap

    def new_memory(self) -> MemoryBank:
        return MemoryBank(self.encoder, self.cap)

    def adopt_memory(self, memory: MemoryBank) -> MemoryBank:
        from ntt_engine import MemoryFormatError
        if memory.encoder_name not in (None, self.encoder):
            raise MemoryFormatError(f"built with {memory.encoder_name!r}, this engine uses {self.encoder!r}")
        memory.encoder_name, memory.max_per_class = self.encoder, self.cap
        return memory


def entries(label: str, seed: int, count: int = 1, negative: bool = False) -> list[MemoryEntry]:
    rng = np.random.default_rng(seed)
    return [MemoryEntry(label, rng.standard_normal(DIM).astype(np.float32), negative, 0.5) for _ in range(count)]
