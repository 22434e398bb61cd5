"""What an annotator changed: one object per region, and the diff between a prediction and the final annotation.

Pure functions over boolean masks (no Label Studio, no torch). Mask IoU comes from pycocotools.

    regions = merge_duplicates(regions)                 # brush + polygon + box of one object → one region
    diff = diff_correction(predicted, regions)
    references = diff.references()                      # every object of the final annotation
    negatives = diff.negatives()                        # deleted predictions + old labels of relabelled ones
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .mask_frames import common_frame

# How much detail a region kind carries: when several regions are one object, the most detailed one is kept.
KIND_DETAIL = {"mask": 3, "polygon": 2, "box": 1}


@dataclass(frozen=True)
class LabelledMask:
    """One region of an image: a label and its mask in image pixels.

    `region_id` is the caller's id (Label Studio keeps a predicted region's id when the annotator accepts or edits
    it); `kind` ("mask", "polygon", "box" or None) says how it was drawn; `score` is the prediction's score.
    """

    label: str
    mask: np.ndarray  # [H, W] bool
    score: float | None = None
    region_id: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class KeptRegion:
    predicted: LabelledMask
    final: LabelledMask
    moved: bool  # the annotator edited the mask (IoU with the prediction below `unchanged_iou`)
    iou: float = 1.0  # mask IoU of the prediction and the final region


@dataclass(frozen=True)
class Relabelled:
    predicted: LabelledMask  # the old label: a negative example of it
    final: LabelledMask  # the new label: a reference of it


@dataclass(frozen=True)
class CorrectionDiff:
    kept: list[KeptRegion] = field(default_factory=list)
    relabelled: list[Relabelled] = field(default_factory=list)
    deleted: list[LabelledMask] = field(default_factory=list)  # predicted, no counterpart in the final annotation
    added: list[LabelledMask] = field(default_factory=list)  # final, no counterpart in the prediction

    def references(self) -> list[LabelledMask]:
        """Every object of the final annotation (kept, relabelled with the new label, added)."""
        return [k.final for k in self.kept] + [r.final for r in self.relabelled] + list(self.added)

    def negatives(self) -> list[LabelledMask]:
        """Predicted regions the annotator rejected: deleted ones and relabelled ones under their old label."""
        return list(self.deleted) + [r.predicted for r in self.relabelled]

    @property
    def edits(self) -> int:
        """Deletions + additions + relabels (a redrawn mask is not counted here: ntt_engine/effort.py counts one
        below its IoU, as the dashboard, `ntt replay` and the effort benchmark do)."""
        return len(self.deleted) + len(self.added) + len(self.relabelled)


def mask_iou(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """[len(a), len(b)] IoU of boolean masks of one image: of one size, or some at the engine's working size and
    some at the original's (compared at the smaller size)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float64)
    both = common_frame([*a, *b])
    a, b = both[:len(a)], both[len(a):]
    def encode(masks: Sequence[np.ndarray]) -> list:  # one mask at a time: no [H, W, n] copies of large images
        return [mask_utils.encode(np.asfortranarray(np.asarray(m, bool).view(np.uint8)[:, :, None]))[0]
                for m in masks]

    return np.asarray(mask_utils.iou(encode(a), encode(b), [0] * len(b)), np.float64).reshape(len(a), len(b))


def greedy_pairs(iou: np.ndarray, threshold: float, allowed: np.ndarray | None = None) -> list[tuple[int, int]]:
    """One-to-one pairs (row, col) with IoU ≥ threshold, best IoU first (ties: lower row, then lower col)."""
    if iou.size == 0:
        return []
    ok = iou >= threshold
    if allowed is not None:
        ok &= allowed
    rows, cols = np.nonzero(ok)
    order = sorted(range(len(rows)), key=lambda k: (-iou[rows[k], cols[k]], rows[k], cols[k]))
    used_rows, used_cols, pairs = set(), set(), []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


def _default_priority(region: LabelledMask) -> float:
    return KIND_DETAIL.get(region.kind or "", 0)


def merge_duplicates(regions: Sequence[LabelledMask], iou: float = 0.8,
                     priority: Callable[[LabelledMask], float] = _default_priority) -> list[LabelledMask]:
    """Regions of one label whose masks overlap with IoU ≥ `iou` are one object (e.g. a brush, a polygon and a box
    drawn around it): keep one per group, the highest `priority` (default: mask > polygon > box by `kind`), ties →
    the earliest. Groups are transitive (a~b and b~c puts a, b, c together). Result in input order."""
    regions = list(regions)
    parent = list(range(len(regions)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for label in {r.label for r in regions}:
        members = [i for i, r in enumerate(regions) if r.label == label]
        overlap = mask_iou([regions[i].mask for i in members], [regions[i].mask for i in members])
        for a, b in zip(*np.nonzero(np.triu(overlap >= iou, k=1))):
            parent[root(members[a])] = root(members[b])
    best: dict[int, int] = {}
    for i, region in enumerate(regions):
        group = root(i)
        if group not in best or priority(region) > priority(regions[best[group]]):
            best[group] = i
    return [regions[i] for i in sorted(best.values())]


def diff_correction(predicted: Sequence[LabelledMask], final: Sequence[LabelledMask], match_iou: float = 0.5,
                    unchanged_iou: float = 0.95) -> CorrectionDiff:
    """Compare what was predicted with what the annotator submitted.

    Matching, one-to-one: (1) by `region_id` where both sides carry the same one (whatever the masks: the annotator
    may have moved it); (2) the rest greedily by mask IoU ≥ `match_iou`, best IoU first, same-label pairs before
    different-label pairs. A matched pair is `kept` (same label; `moved` when IoU < `unchanged_iou`) or
    `relabelled`; unmatched predictions are `deleted`, unmatched final regions `added`.
    """
    predicted, final = list(predicted), list(final)
    pairs: list[tuple[int, int]] = []
    by_id = {r.region_id: j for j, r in enumerate(final) if r.region_id is not None}
    for i, region in enumerate(predicted):
        j = by_id.pop(region.region_id, None) if region.region_id is not None else None
        if j is not None:
            pairs.append((i, j))
    free_p = [i for i in range(len(predicted)) if i not in {p for p, _ in pairs}]
    free_f = [j for j in range(len(final)) if j not in {f for _, f in pairs}]
    iou_all = mask_iou([predicted[i].mask for i in free_p], [final[j].mask for j in free_f])
    same = np.array([[predicted[i].label == final[j].label for j in free_f] for i in free_p], bool).reshape(
        iou_all.shape)
    for allowed in (same, ~same):
        taken_p, taken_f = {p for p, _ in pairs}, {f for _, f in pairs}
        open_ = np.array([[free_p[a] not in taken_p and free_f[b] not in taken_f for b in range(len(free_f))]
                          for a in range(len(free_p))], bool).reshape(iou_all.shape)
        pairs += [(free_p[a], free_f[b]) for a, b in greedy_pairs(iou_all, match_iou, allowed & open_)]
    kept, relabelled = [], []
    for i, j in sorted(pairs):
        p, f = predicted[i], final[j]
        if p.label == f.label:
            iou = float(mask_iou([p.mask], [f.mask])[0, 0])
            kept.append(KeptRegion(p, f, iou < unchanged_iou, iou))
        else:
            relabelled.append(Relabelled(p, f))
    matched_p, matched_f = {i for i, _ in pairs}, {j for _, j in pairs}
    return CorrectionDiff(kept, relabelled, [r for i, r in enumerate(predicted) if i not in matched_p],
                          [r for j, r in enumerate(final) if j not in matched_f])
