"""Stage `remember`: the per-class memory bank of pooled reference vectors (ALGORITHM.md §2.3).

It stores one raw pooled vector e per reference instance (kilobytes, not patch maps), grouped by reference id (one
id = one annotated image), so an annotation can be replaced or removed as a unit. Class prototypes
P[c] = normalise(mean_i e[c, i]) are derived on demand and cached until the bank changes.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .pooling import normalise

FORMAT_NAME = "ntt-memory"
FORMAT_VERSION = 1


class MemoryFormatError(ValueError):
    """A memory file that is not ours, is corrupt, or was made with an incompatible encoder."""


@dataclass(frozen=True)
class MemoryEntry:
    label: str
    vector: np.ndarray  # [C] float32, raw pooled features
    # a wrong prediction of `label`, not an example of it: mined on a negative image (§9.5), or deleted / relabelled
    # by an annotator (a correction); matching uses them example by example (learn_from_corrections)
    negative: bool = False
    level: float = 0.0  # how similar the reference's own foreground patches are to it (similarity prompting)


@dataclass(frozen=True)
class Examples:
    """Memory vectors one row per example (not averaged): corrections compare a proposal with its nearest ones."""

    labels: tuple[str, ...]  # [M] the class of each example (for a negative: the class it was wrongly predicted as)
    vectors: torch.Tensor  # [M, C], L2-normalised
    refs: tuple[str, ...] = ()  # [M] the reference id each example was stored under (when known)

    def __len__(self) -> int:
        return len(self.labels)

    def nearest(self, vector: torch.Tensor, label: str) -> tuple[str, float] | None:
        """The example of `label` most similar to an L2-normalised `vector`: (its reference id, cosine)."""
        rows = [i for i, name in enumerate(self.labels) if name == label and i < len(self.refs)]
        if not rows:
            return None
        similarity = self.vectors[rows] @ vector
        best = int(torch.argmax(similarity))
        return self.refs[rows[best]], round(float(similarity[best]), 4)


@dataclass(frozen=True)
class Prototypes:
    labels: tuple[str, ...]
    vectors: torch.Tensor  # [K, C], L2-normalised
    levels: torch.Tensor | None = None  # [K] mean reference self-similarity level per class

    def __len__(self) -> int:
        return len(self.labels)


KEEP_POLICIES = ("first", "latest")  # which references of a class the cap keeps active: the earliest or the newest


class MemoryBank:
    def __init__(self, encoder_name: str | None = None, max_per_class: int | None = None, keep: str = "first"):
        if keep not in KEEP_POLICIES:
            raise ValueError(f"keep must be one of {KEEP_POLICIES}, got {keep!r}")
        self.encoder_name = encoder_name
        self.max_per_class = max_per_class  # the memory length per class: examples matching uses (None: all)
        self.keep = keep
        self.revision = 0
        self._entries: dict[str, list[MemoryEntry]] = {}  # insertion-ordered: a replaced reference moves to the end
        self._negative_images: set[str] = set()
        # per class, the references holding positive entries of it (in memory order) and how many: the cap's
        # selection costs what it keeps, not what the memory holds
        self._by_class: dict[str, dict[str, int]] = {}
        self._seq: dict[str, int] = {}  # each reference's position in memory order (grows with every change)
        self._next_seq = 0
        self._positives = 0
        self._prototype_cache: dict[bool, tuple[int, Prototypes]] = {}
        self._examples_cache: dict[str, tuple[int, Examples]] = {}

    # ----- changes (each one bumps the revision) -----
    def set_reference(self, ref_id: str, entries: list[MemoryEntry], negative_image: bool = False) -> None:
        """Replace everything stored under `ref_id` (an empty list with negative_image=False removes it)."""
        self._check_vectors(entries)
        self._drop(ref_id)
        if entries:
            self._add(ref_id, list(entries))
        if negative_image:
            self._negative_images.add(ref_id)
        self.revision += 1

    def _add(self, ref_id: str, entries: list[MemoryEntry]) -> None:
        self._entries[ref_id] = entries
        self._seq[ref_id] = self._next_seq
        self._next_seq += 1
        for entry in entries:
            if not entry.negative:
                refs = self._by_class.setdefault(entry.label, {})
                refs[ref_id] = refs.get(ref_id, 0) + 1
                self._positives += 1

    def _drop(self, ref_id: str) -> None:
        self._negative_images.discard(ref_id)
        old = self._entries.pop(ref_id, None)
        self._seq.pop(ref_id, None)
        for label in {e.label for e in old or () if not e.negative}:
            refs = self._by_class[label]
            self._positives -= refs.pop(ref_id)
            if not refs:
                del self._by_class[label]

    def touch(self) -> None:
        """A new revision without a content change (e.g. a setting that changes predictions moved)."""
        self.revision += 1

    def remove(self, ref_id: str) -> None:
        if ref_id not in self:
            raise KeyError(f"unknown reference id {ref_id!r}; known ids: {sorted(self.reference_ids())[:10]}")
        self.set_reference(ref_id, [])

    def _check_vectors(self, entries: list[MemoryEntry]) -> None:
        for entry in entries:
            if entry.vector.ndim != 1 or not np.all(np.isfinite(entry.vector)):
                raise ValueError(f"reference vector for {entry.label!r} must be a finite 1-D array")
            dim = self.dim
            if dim is not None and entry.vector.shape[0] != dim:
                raise ValueError(f"reference vector has {entry.vector.shape[0]} dims, the memory holds {dim}")

    # ----- queries -----
    def __contains__(self, ref_id: str) -> bool:
        return ref_id in self._entries or ref_id in self._negative_images

    def __len__(self) -> int:
        return self._positives

    def reference_ids(self) -> set[str]:
        return set(self._entries) | self._negative_images

    def reference_order(self) -> list[str]:
        """Reference ids in insertion order (the order the per-class cap keeps), negative images without entries
        last."""
        return list(self._entries) + sorted(self._negative_images - self._entries.keys())

    def entries(self, ref_id: str) -> list[MemoryEntry]:
        return list(self._entries.get(ref_id, []))

    @property
    def negative_images(self) -> frozenset[str]:
        return frozenset(self._negative_images)

    @property
    def dim(self) -> int | None:
        for entry in self._all_entries():
            return int(entry.vector.shape[0])
        return None

    def counts(self) -> dict[str, int]:
        """References per class (before the cap)."""
        return {label: sum(refs.values()) for label, refs in sorted(self._by_class.items())}

    def active_counts(self) -> dict[str, int]:
        """References per class that matching uses (the cap's share); the rest are held back, not deleted: raising
        the cap brings them back."""
        cap = self.max_per_class
        return {label: count if cap is None else min(count, cap) for label, count in self.counts().items()}

    def _all_entries(self):
        for entries in self._entries.values():
            yield from entries

    def copy(self) -> "MemoryBank":
        """A copy that can change on its own (entries shared: they are frozen, and a change replaces a reference's
        list, never edits it), at the same revision."""
        bank = MemoryBank(self.encoder_name, self.max_per_class, self.keep)
        bank._entries = dict(self._entries)
        bank._negative_images = set(self._negative_images)
        bank._by_class = {label: dict(refs) for label, refs in self._by_class.items()}
        bank._seq, bank._next_seq, bank._positives = dict(self._seq), self._next_seq, self._positives
        bank.revision = self.revision
        return bank

    def stored_as(self, ref_id: str) -> tuple[list[MemoryEntry] | None, bool]:
        """The very list stored under `ref_id` (None when absent) and whether it is a negative image: a store
        compares these by identity to find the references an edit replaced."""
        return self._entries.get(ref_id), ref_id in self._negative_images

    def without(self, ref_id: str) -> "MemoryBank":
        """A copy without `ref_id` (entries shared, not copied), at the same revision: for leave-one-out."""
        bank = self.copy()
        bank._drop(ref_id)
        return bank

    def negative_examples(self) -> Examples:
        """Every negative entry one by one, in insertion order: predictions annotators rejected (corrections) and,
        with `use_negatives`, those mined on negative images (both are wrong predictions of their class)."""
        return self._cached("negative_examples", lambda: self._examples(
            [(ref_id, e) for ref_id, entries in self._entries.items() for e in entries if e.negative]))

    def positive_examples(self) -> Examples:
        """The references one by one (the first `max_per_class` of each class, as the prototypes use)."""
        return self._cached("positive_examples", self._positive_examples)

    def _cached(self, key: str, build: Callable[[], Examples]) -> Examples:
        cached = self._examples_cache.get(key)
        if cached is None or cached[0] != self.revision:
            cached = (self.revision, build())
            self._examples_cache[key] = cached
        return cached[1]

    def _positive_examples(self) -> Examples:
        return self._examples(self._active())

    def _active(self) -> list[tuple[str, MemoryEntry]]:
        """(reference id, entry) of every positive entry matching uses, in memory order: all of them, or per class
        the first (keep="first") or the latest (keep="latest") `max_per_class`."""
        cap = self.max_per_class
        if cap is None:
            return [(ref, e) for ref, entries in self._entries.items() for e in entries if not e.negative]
        chosen = []
        for label, refs in self._by_class.items():
            left = cap
            for ref in (refs if self.keep == "first" else reversed(refs)):
                mine = [(i, e) for i, e in enumerate(self._entries[ref]) if not e.negative and e.label == label]
                taken = mine[:left] if self.keep == "first" else mine[-left:]
                chosen += [(self._seq[ref], i, ref, e) for i, e in taken]
                left -= len(taken)
                if left <= 0:
                    break
        chosen.sort(key=lambda item: (item[0], item[1]))
        return [(ref, entry) for _, _, ref, entry in chosen]

    def _examples(self, chosen: list[tuple[str, MemoryEntry]]) -> Examples:
        if not chosen:
            return Examples((), torch.zeros((0, self.dim or 0)))
        return Examples(tuple(e.label for _, e in chosen),
                        normalise(torch.from_numpy(np.stack([e.vector for _, e in chosen])).float()),
                        tuple(ref_id for ref_id, _ in chosen))

    def prototypes(self, negative: bool = False) -> Prototypes:
        """Per-class normalised mean of the vectors matching uses (the cap's selection); classes without vectors are
        absent."""
        cached = self._prototype_cache.get(negative)
        if cached and cached[0] == self.revision:
            return cached[1]
        grouped: dict[str, list[MemoryEntry]] = {}
        if not negative:  # the examples matching uses: the cap's selection
            for _, entry in self._active():
                grouped.setdefault(entry.label, []).append(entry)
        else:  # the first `max_per_class` negatives of each class
            for entry in self._all_entries():
                if entry.negative:
                    members = grouped.setdefault(entry.label, [])
                    if self.max_per_class is None or len(members) < self.max_per_class:
                        members.append(entry)
        labels = tuple(sorted(grouped))
        dim = self.dim or 0
        means = [np.mean(np.stack([e.vector for e in grouped[label]]), axis=0) for label in labels]
        vectors = normalise(torch.from_numpy(np.stack(means)).float()) if means else torch.zeros((0, dim))
        levels = torch.tensor([float(np.mean([e.level for e in grouped[label]])) for label in labels])
        result = Prototypes(labels, vectors, levels)
        self._prototype_cache[negative] = (self.revision, result)
        return result

    def nbytes(self) -> int:
        return sum(e.vector.nbytes for e in self._all_entries())

    # ----- persistence -----
    def to_bytes(self) -> bytes:
        records, vectors = [], []
        for ref_id, entries in self._entries.items():
            for entry in entries:
                records.append({"ref_id": ref_id, "label": entry.label, "negative": entry.negative,
                                "level": entry.level})
                vectors.append(entry.vector.astype(np.float32))
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "encoder": self.encoder_name,
                "revision": self.revision, "max_per_class": self.max_per_class,
                "references": records, "negative_images": sorted(self._negative_images)}
        array = np.stack(vectors) if vectors else np.zeros((0, self.dim or 0), np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, vectors=array, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        return buffer.getvalue()

    def save(self, path: str | Path) -> None:
        """Atomic: write a temporary file beside `path`, fsync, rename. A crash leaves the old file intact."""
        atomic_write_bytes(Path(path), self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "MemoryBank":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                meta = json.loads(bytes(archive["meta"]).decode())
                vectors = archive["vectors"].astype(np.float32)
        except Exception as exc:  # noqa: BLE001 - any decoding failure means "not a memory file"
            raise MemoryFormatError(f"{source} is not a readable ntt memory file: {exc}") from exc
        if meta.get("format") != FORMAT_NAME:
            raise MemoryFormatError(f"{source} is not an ntt memory file")
        if meta.get("version") != FORMAT_VERSION:
            raise MemoryFormatError(f"{source} has memory format version {meta.get('version')}, "
                                    f"this ntt_engine reads version {FORMAT_VERSION}")
        if len(meta["references"]) != len(vectors):
            raise MemoryFormatError(f"{source} is inconsistent: {len(meta['references'])} records, "
                                    f"{len(vectors)} vectors")
        bank = cls(meta.get("encoder"), meta.get("max_per_class"))
        grouped: dict[str, list[MemoryEntry]] = {}
        for record, vector in zip(meta["references"], vectors):
            grouped.setdefault(record["ref_id"], []).append(
                MemoryEntry(record["label"], vector, bool(record.get("negative", False)),
                            float(record.get("level", 0.0))))
        for ref_id, entries in grouped.items():
            bank._add(ref_id, entries)
        bank._negative_images = set(meta.get("negative_images", []))
        bank.revision = int(meta.get("revision", 0))
        return bank

    @classmethod
    def load(cls, path: str | Path) -> "MemoryBank":
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise MemoryFormatError(f"cannot read memory file {path}: {exc.strerror or exc}") from exc
        return cls.from_bytes(data, str(path))


def atomic_write_bytes(path: Path, data: bytes, before_replace: Callable[[], None] | None = None) -> None:
    """Temporary file beside `path`, fsync, rename, fsync the directory: a crash leaves the old or the new file,
    never a mix. `before_replace` runs between the two (crash tests pause there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
