"""Keep Label Studio's model-version lists short: this backend's predictions that are no longer current, and that an
annotation started from or that lie beyond the refreshed tasks, carry one archive version instead of their own.

Label Studio lists every distinct `model_version` among a project's predictions (the Predictions settings page, the
Data Manager filter, "Create Annotations From Predictions"; LABEL_STUDIO.md §4.1), newest first and unbounded, and
`model_version` moves with every memory change: after a day of labelling that was hundreds of entries. A version is
listed while a prediction carries it, so this backend relabels (PATCH, model_version only: the id, the result, the
score and every annotation's `parent_prediction` stay) its superseded predictions to `<engine id>.archived`:
- the prediction an annotation started from (its record's source names it), once the annotation is learnt;
- any other of this backend's predictions of a superseded version (a bulk pre-label of the whole project, a process
  restart, a race), in one sweep over the project's tasks, run only when Label Studio lists more than
  MAX_SUPERSEDED_VERSIONS superseded versions of this backend.
The tasks the refresh keeps current carry the current version; Label Studio re-predicts an archived task (its version
is not the current one) when it serves it, and /predict archives any live older one first (stale.py). Nothing is
deleted: an open editor's submit names its prediction as parent_prediction. So this backend's entries in the lists
are the current version, `.archived`, and at most MAX_SUPERSEDED_VERSIONS others.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable

from labelstudio_backend.predict.stale import archive_predictions, own_predictions
from labelstudio_backend.store.projects import AnnotationRecord, ProjectState

log = logging.getLogger(__name__)

MAX_SUPERSEDED_VERSIONS = 2  # superseded versions of this backend Label Studio may list before a sweep
RECENT_ON_START = 20  # a process's first pass over a project relabels the parents of this many latest annotations


@dataclass
class ArchiveStats:
    parents: int = 0  # predictions annotations started from, relabelled
    swept: int = 0  # other superseded predictions relabelled by a sweep


def started_from(records: Iterable[AnnotationRecord]) -> set[int]:
    """The prediction ids these learnt annotations started from (their records' source)."""
    ids = set()
    for record in records:
        kind, _, value = (record.source or "").partition(" ")
        if kind in ("correction", "copy") and value.isdigit():
            ids.add(int(value))
    return ids


class VersionArchive:
    """Per process: the parents it has relabelled already (a PATCH is idempotent, so another process of the same
    MODEL_DIR doing one again changes nothing)."""

    def __init__(self) -> None:
        self._done: dict[int, set[int]] = {}

    def run(self, api: Any, project: int, state: ProjectState, current: str, archive: str,
            own: re.Pattern) -> ArchiveStats:
        """`api`: Label Studio's (labelstudio/client.py); `current`: the project's model_version now."""
        stats = ArchiveStats()
        if project not in self._done:
            # of what was learnt before this process began only the latest few are looked at; the rest is left to
            # the sweep: relabelling every parent after each restart would cost a call per annotation
            latest = sorted(state.annotations.values(), key=lambda r: r.updated_at or "")[-RECENT_ON_START:]
            self._done[project] = started_from(state.annotations.values()) - started_from(latest)
        done = self._done[project]
        parents = started_from(state.annotations.values()) - done
        superseded = _superseded(api, project, current, archive, own)
        if superseded:  # one that fails is caught by the sweep once versions pile up
            stats.parents = archive_predictions(api, sorted(parents), archive, f"project {project}")
        done |= parents
        if stats.parents:
            superseded = _superseded(api, project, current, archive, own)
        if len(superseded) > MAX_SUPERSEDED_VERSIONS:
            stats.swept = _sweep(api, project, superseded, archive, own)
            superseded = _superseded(api, project, current, archive, own)
        if stats.parents or stats.swept:
            log.info("project %d: %d prediction(s) annotations started from and %d other superseded one(s) now carry "
                     "%s (Label Studio lists %d superseded version(s) of this backend besides the current one)",
                     project, stats.parents, stats.swept, archive, len(superseded))
        return stats


def _superseded(api: Any, project: int, current: str, archive: str, own: re.Pattern) -> set[str]:
    """This backend's versions, other than the current one and the archive, that Label Studio lists."""
    listed = api.model_versions(project)
    return {v for v, count in listed.items() if count and own.match(v) and v not in (current, archive)}


def _sweep(api: Any, project: int, superseded: set[str], archive: str, own: re.Pattern) -> int:
    """Every prediction of the project carrying one of `superseded` relabelled (one pass over its tasks)."""
    relabelled = 0
    for task in api.iter_tasks(project):
        stale = [p["id"] for p in (own_predictions(task, own) if isinstance(task, dict) else [])
                 if p["model_version"] in superseded]
        relabelled += archive_predictions(api, stale, archive, f"project {project}")
    return relabelled
