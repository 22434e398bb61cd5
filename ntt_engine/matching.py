"""Stage `match`: score proposals against the class prototypes and select the final detections (ALGORITHM.md §4).

Pure functions over tensors; `select_detections` is the whole §4.3–§4.8 chain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, masks_to_boxes

from .memory import Examples, Prototypes
from .timing import NULL_TIMES, StageTimes


@dataclass(frozen=True)
class MatchSettings:
    nms_threshold: float = 0.5
    nms_cap: int = 800
    merge_exponent: float = 0.5
    max_instances: int = 100
    negative_temperature: float = 0.8
    correction_temperature: float = 0.05


@dataclass(frozen=True)
class Detections:
    """Selected proposals, best score first: indices into the proposals, class indices, scores."""

    index: torch.Tensor  # [k] long
    label: torch.Tensor  # [k] long, into Prototypes.labels
    score: torch.Tensor  # [k] float


def classify(vectors: torch.Tensor, valid: torch.Tensor, prototypes: Prototypes) -> tuple[torch.Tensor, torch.Tensor]:
    """Label = argmax of the clamped cosine to each prototype, score = that cosine (§4.3–4.4)."""
    if len(prototypes) == 0 or vectors.shape[0] == 0:
        return torch.zeros(vectors.shape[0], dtype=torch.long), torch.zeros(vectors.shape[0])
    similarity = (vectors @ prototypes.vectors.T).clamp(min=0)
    score, label = similarity.max(dim=1)
    return label, torch.where(valid, score, torch.zeros_like(score))


def penalise_negatives(score: torch.Tensor, label: torch.Tensor, vectors: torch.Tensor, positives: Prototypes,
                       negatives: Prototypes, temperature: float) -> torch.Tensor:
    """§4.10 negative mode: s_pos · exp(−max(0, s_neg − s_pos) / T), with s_neg against the label's negatives."""
    if len(negatives) == 0 or score.numel() == 0:
        return score
    negative_row = {name: i for i, name in enumerate(negatives.labels)}
    rows = torch.tensor([negative_row.get(positives.labels[int(c)], -1) for c in label], dtype=torch.long)
    has_negative = rows >= 0
    s_neg = torch.zeros_like(score)
    if has_negative.any():
        chosen = negatives.vectors[rows[has_negative]]
        s_neg[has_negative] = (vectors[has_negative] * chosen).sum(1).clamp(min=0)
    return score * torch.exp(-(s_neg - score).clamp(min=0) / temperature)


def penalise_negative_examples(score: torch.Tensor, label: torch.Tensor, vectors: torch.Tensor,
                               positives: Prototypes, negatives: Examples, temperature: float,
                               references: Examples | None = None) -> torch.Tensor:
    """Corrections: s · exp(−max(0, s_neg − s_pos) / T). s_neg: cosine to the *nearest* rejected example of the
    proposal's class; s_pos: the larger of its score s (prototype cosine) and its cosine to the nearest reference of
    that class. A proposal closer to something an annotator deleted than to anything they kept fades; others are
    untouched."""
    if len(negatives) == 0 or score.numel() == 0:
        return score
    s_neg = _nearest(vectors, label, positives, negatives)
    s_pos = score if references is None else torch.maximum(score, _nearest(vectors, label, positives, references))
    return score * torch.exp(-(s_neg - s_pos).clamp(min=0) / temperature)


def _nearest(vectors: torch.Tensor, label: torch.Tensor, positives: Prototypes, examples: Examples) -> torch.Tensor:
    """[n] clamped cosine of each vector to the nearest example of its label (0 when the label has none)."""
    if len(examples) == 0:
        return torch.zeros(vectors.shape[0])
    example_class = torch.tensor([positives.labels.index(name) if name in positives.labels else -1
                                  for name in examples.labels], dtype=torch.long)
    similarity = (vectors @ examples.vectors.T).clamp(min=0)  # [n, M]
    same_class = label.unsqueeze(1) == example_class.unsqueeze(0)
    return torch.where(same_class, similarity, torch.zeros_like(similarity)).amax(dim=1)


def class_aware_nms(masks: torch.Tensor, quality: torch.Tensor, label: torch.Tensor, threshold: float,
                    cap: int) -> torch.Tensor:
    """Per-class box NMS ranked by the proposer's quality (SAM IoU, §4.5); returns kept indices, quality descending."""
    nonempty = masks.flatten(1).any(1)
    candidates = torch.nonzero(nonempty).flatten()
    if candidates.numel() == 0:
        return candidates
    boxes = masks_to_boxes(masks[candidates])
    keep = batched_nms(boxes.float(), quality[candidates].float(), label[candidates], threshold)
    return candidates[keep[:cap]]


def semantic_soft_merge(masks: torch.Tensor, vectors: torch.Tensor, label: torch.Tensor, score: torch.Tensor,
                        exponent: float) -> torch.Tensor:
    """§4.7: σ_j ← σ_j·(1 − max_{k earlier, same class} IoS_jk·max(0, f_j·f_k))^exponent.

    Rows are in rank order (earlier = higher quality). Intersections come from one matmul per class.
    """
    decayed = score.clone()
    flat = masks.flatten(1)
    for cls in torch.unique(label):
        rows = torch.nonzero(label == cls).flatten()
        if rows.numel() < 2:
            continue
        binary = flat[rows].float()
        intersection = binary @ binary.T
        area = binary.sum(1).clamp(min=1)
        ios = intersection / area.unsqueeze(1)  # [j, k] = |B_j ∩ B_k| / |B_j|
        semantic = (vectors[rows] @ vectors[rows].T).clamp(min=0)
        earlier = torch.tril(torch.ones_like(ios, dtype=torch.bool), diagonal=-1)
        penalty = torch.where(earlier, ios * semantic, torch.zeros_like(ios)).amax(dim=1).clamp(0, 1)
        decayed[rows] = score[rows] * (1 - penalty) ** exponent
    return decayed


def upsample_logits(logits: torch.Tensor, size: tuple[int, int], chunk: int = 32) -> torch.Tensor:
    """Low-res logits → boolean masks at `size` (bilinear with antialias, as §4.7), in chunks to bound memory."""
    if logits.shape[-2:] == tuple(size):
        return logits > 0
    out = torch.empty((logits.shape[0], *size), dtype=torch.bool)
    for start in range(0, logits.shape[0], chunk):
        part = logits[start:start + chunk].float().unsqueeze(1)
        out[start:start + chunk] = F.interpolate(part, size=size, mode="bilinear", align_corners=False,
                                                 antialias=True)[:, 0] > 0
    return out


def select_detections(logits: torch.Tensor, quality: torch.Tensor, vectors: torch.Tensor, valid: torch.Tensor,
                      prototypes: Prototypes, settings: MatchSettings, merge_size: tuple[int, int] | None,
                      negatives: Prototypes | None = None, times: StageTimes = NULL_TIMES,
                      negative_examples: Examples | None = None,
                      reference_examples: Examples | None = None) -> Detections:
    """Classify, penalise negatives (mined prototypes §4.10, correction examples), NMS, positivity filter, soft
    merge, top-k. `merge_size` None = merge at the logits' resolution."""
    empty = Detections(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    if len(prototypes) == 0 or logits.shape[0] == 0:
        return empty
    with times.measure("classify"):
        label, score = classify(vectors, valid, prototypes)
        if negatives is not None:
            score = penalise_negatives(score, label, vectors, prototypes, negatives, settings.negative_temperature)
        if negative_examples is not None:
            score = penalise_negative_examples(score, label, vectors, prototypes, negative_examples,
                                               settings.correction_temperature, reference_examples)
    with times.measure("nms"):
        keep = class_aware_nms(logits > 0, quality, label, settings.nms_threshold, settings.nms_cap)
        keep = keep[score[keep] > 0]
    if keep.numel() == 0:
        return empty
    with times.measure("merging"):
        masks = logits[keep] > 0 if merge_size is None else upsample_logits(logits[keep], merge_size)
        merged = semantic_soft_merge(masks, vectors[keep], label[keep], score[keep], settings.merge_exponent)
    order = torch.argsort(merged, descending=True, stable=True)[: settings.max_instances]
    return Detections(keep[order], label[keep][order], merged[order])


def nms_cap(max_instances: int, factor: int) -> int:
    return max(1, int(math.ceil(max_instances * factor)))
