"""A project's dashboard figures, summed from its annotation records (ntt_engine/effort.py) and its memory.

Pure: state + memory + thresholds in, a JSON-ready dict out. Because every figure is a sum over the records of the
annotations that exist now, deleting an annotation undoes its share and a resync, which rebuilds the records,
gives the same numbers.
"""
from __future__ import annotations

from typing import Any

from labelstudio_backend.labelstudio.label_config import LabelConfigError, parse_label_config
from ntt_engine.effort import CLASS_COUNTS, OUTCOMES, edits
from labelstudio_backend.predict.task_score import Thresholds
from labelstudio_backend.store.projects import ProjectState
from ntt_engine import MemoryBank

RECENT = 10  # the last corrections listed
WINDOW = 5  # moving average of the effort curve, in tasks
GALLERY_PER_GROUP = 12  # thumbnails shown per class (and of negative images), newest first


def project_stats(state: ProjectState, memory: MemoryBank, thresholds: Thresholds, threshold_source: str,
                  model_version: str) -> dict[str, Any]:
    records = sorted(((int(key), record) for key, record in state.annotations.items()
                      if key.isdigit() and record.effort), key=lambda kr: kr[0])
    corrections = [(key, r) for key, r in records if r.effort.get("source") == "correction"]
    totals = {name: sum(int(r.effort.get(name, 0)) for _, r in records) for name in OUTCOMES}
    lead = [r.effort["lead_time"] for _, r in records if r.effort.get("lead_time") is not None]
    return {
        "project": state.project_id,
        "model_version": model_version,
        "revision": memory.revision,
        "annotations": {"counted": len(records), "from_predictions": len(corrections),
                        "drawn": sum(1 for _, r in records if r.effort.get("source") == "drawn")},
        "totals": {**totals, "edits": sum(edits(r.effort) for _, r in records),
                   "hand_drawn_edits": sum(_objects(r.effort) for _, r in records),
                   "mean_lead_time_s": round(sum(lead) / len(lead), 2) if lead else None},
        "classes": _classes(state, memory, thresholds, threshold_source),
        "curve": _curve(records),
        "recent": [_row(key, r) for key, r in corrections[-RECENT:]][::-1],
        "gallery": gallery(state),
    }


def gallery(state: ProjectState, per_group: int = GALLERY_PER_GROUP) -> list[dict[str, Any]]:
    """The memory in pictures: per class its newest reference and negative thumbnails, then the newest negative
    images, each with the annotation and task it came from (store/thumbnails.py has the files)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    newest_first = sorted(((key, r) for key, r in state.annotations.items() if key.isdigit() and r.thumbs),
                          key=lambda kr: (kr[1].updated_at or "", int(kr[0])), reverse=True)
    for key, record in newest_first:
        for index, (label, kind) in enumerate(record.thumbs):
            group = groups.setdefault(label or "negative images", [])
            if len(group) < per_group:
                group.append({"annotation": int(key), "task": record.task_id, "index": index, "kind": kind})
    named = sorted(g for g in groups if g != "negative images")
    return [{"group": g, "tiles": groups[g]} for g in named + (["negative images"] if "negative images" in groups else [])]


def _objects(effort: dict) -> int:
    """Objects of the final annotation: what drawing everything by hand would have cost."""
    return sum(int(row.get("final", 0)) for row in (effort.get("per_class") or {}).values())


def class_outcomes(state: ProjectState) -> dict[str, dict[str, int]]:
    """Per class: regions predicted, kept, deleted (or relabelled away), objects added, and final objects, summed
    over the annotations that corrected a prediction (precision and recall only where there was one to judge)."""
    counts: dict[str, dict[str, int]] = {}
    for record in state.annotations.values():
        if record.effort.get("source") != "correction":
            continue
        for label, row in (record.effort.get("per_class") or {}).items():
            total = counts.setdefault(label, dict.fromkeys(CLASS_COUNTS, 0))
            for name in total:
                total[name] += int(row.get(name, 0))
    return dict(sorted(counts.items()))


def _classes(state: ProjectState, memory: MemoryBank, thresholds: Thresholds, source: str) -> list[dict[str, Any]]:
    counts = class_outcomes(state)
    negatives: dict[str, int] = {}
    for ref in memory.reference_ids():
        for entry in memory.entries(ref):
            if entry.negative:
                negatives[entry.label] = negatives.get(entry.label, 0) + 1
    references, active = memory.counts(), memory.active_counts()
    rows = []
    every = set(references) | set(negatives) | set(counts) | set(thresholds.per_class) | _config_labels(state)
    for label in sorted(every):  # every class of the label config, learnt or not yet
        c = counts.get(label, dict.fromkeys(CLASS_COUNTS, 0))
        rows.append({"label": label, "references": references.get(label, 0),
                     "held_back": references.get(label, 0) - active.get(label, 0), "negatives": negatives.get(label, 0),
                     "threshold": round(thresholds.of(label), 4), "threshold_source": source, **c,
                     "precision": round(c["kept"] / c["predicted"], 4) if c["predicted"] else None,
                     "recall": round(c["kept"] / c["final"], 4) if c["final"] else None})
    return rows


def _config_labels(state: ProjectState) -> set[str]:
    try:
        return set(parse_label_config(state.label_config).labels) if state.label_config else set()
    except LabelConfigError:
        return set()


def _curve(records: list) -> list[dict[str, Any]]:
    points, window = [], []
    for index, (key, record) in enumerate(records, start=1):
        window = (window + [edits(record.effort)])[-WINDOW:]
        points.append({"index": index, "annotation": key, "task": record.task_id, "edits": edits(record.effort),
                       "hand_drawn": _objects(record.effort), "source": record.effort.get("source"),
                       "moving_average": round(sum(window) / len(window), 3)})
    return points


def _row(key: int, record: Any) -> dict[str, Any]:
    per_class = record.effort.get("per_class") or {}
    return {"annotation": key, "task": record.task_id, "when": record.updated_at, "edits": edits(record.effort),
            **{name: int(record.effort.get(name, 0)) for name in OUTCOMES},
            "deleted_labels": {k: v["deleted"] for k, v in per_class.items() if v.get("deleted")},
            "added_labels": {k: v["added"] for k, v in per_class.items() if v.get("added")}}
