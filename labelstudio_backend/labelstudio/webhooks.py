"""Webhook payloads → jobs for the background worker (pure parsing; nothing is applied here).

Label Studio 1.23 sends (see LABEL_STUDIO.md §1.5): ANNOTATION_CREATED / ANNOTATION_UPDATED with `annotation` and
`task` objects, ANNOTATIONS_CREATED with lists under the same keys, ANNOTATIONS_DELETED with `annotations: [{id}]`,
START_TRAINING with only `project`; and, because the auto-created webhook has send_for_all_actions, many others
(TASKS_CREATED, PROJECT_UPDATED, ...) that this backend acknowledges and ignores.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from labelstudio_backend.labelstudio.ids import integer_id, parse_project_id

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
DELETE_ACTIONS = ("ANNOTATIONS_DELETED",)
RESYNC_ACTIONS = ("START_TRAINING",)
HANDLED_ACTIONS = ANNOTATION_ACTIONS + DELETE_ACTIONS + RESYNC_ACTIONS
SYNC = "SYNC"  # internal: a full resync requested by /setup


class EventError(ValueError):
    """A malformed webhook body (400)."""


class Outcome:
    """How applying a job ended, for whoever waits on it: `error` is None while pending or after success."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.retryable = False  # the store could not write (a full disk...): a 503, not a 500

    def fail(self, error: str, retryable: bool = False) -> None:
        self.error, self.retryable = error, retryable


@dataclass(frozen=True)
class SyncJob:
    action: str
    project_id: int | None
    annotations: tuple[dict, ...] = ()  # full annotation objects (payload) or {"id": n} stubs
    tasks: dict[int, dict] = field(default_factory=dict)  # task id → task object from the payload
    label_config: str = ""  # the payload project's config (used only when payloads are trusted)
    received_at: float = field(default_factory=time.time)
    size_bytes: int = 0  # what it holds in the queue (its webhook body), for the queue's byte bound
    outcome: Outcome = field(default_factory=Outcome, compare=False, repr=False)  # shared by its replace()d copies
    journal_entry: str | None = field(default=None, compare=False, repr=False)  # where it is written down

    def ids_only(self) -> "SyncJob":
        """The job without its payload: in API mode the worker re-reads everything by id, so queuing the webhook's
        annotations, tasks and config would only hold memory."""
        return dataclasses.replace(self, annotations=tuple({"id": i} for i in self.annotation_ids), tasks={},
                                   label_config="", size_bytes=64 * (1 + len(self.annotations)))

    @property
    def annotation_ids(self) -> list[int]:
        return [i for i in (integer_id(a.get("id")) for a in self.annotations) if i is not None]

    @property
    def is_resync(self) -> bool:
        """A resync of the whole project (START_TRAINING, or SYNC from /setup): nobody waits for it to finish."""
        return self.action in RESYNC_ACTIONS or self.action == SYNC


def _as_list(value: Any) -> list[dict]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def _project_of(payload: dict, annotations: list[dict], tasks: list[dict]) -> int | None:
    for candidate in [payload.get("project")] + [a.get("project") for a in annotations] + \
                     [t.get("project") for t in tasks]:
        if candidate is None:
            continue
        try:
            return parse_project_id(candidate)
        except ValueError:
            continue
    return None


def parse_webhook(payload: Any) -> SyncJob | None:
    """A job for a handled action, None for an action this backend ignores; EventError for a malformed body."""
    if not isinstance(payload, dict):
        raise EventError("the webhook body must be a JSON object")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise EventError("the webhook body has no 'action'")
    if action not in HANDLED_ACTIONS:
        return None
    project = payload.get("project")
    config = project.get("label_config", "") if isinstance(project, dict) else ""
    if action in RESYNC_ACTIONS:
        project_id = _project_of(payload, [], [])
        if project_id is None:
            raise EventError(f"{action} without a project id")
        return SyncJob(action, project_id, label_config=config if isinstance(config, str) else "")
    key = "annotations" if action in DELETE_ACTIONS else "annotation"
    annotations = _as_list(payload.get(key))
    if not annotations:
        raise EventError(f"{action} without '{key}'")
    tasks = _as_list(payload.get("task"))
    job = SyncJob(action, _project_of(payload, annotations, tasks), tuple(annotations),
                  {t["id"]: t for t in tasks if isinstance(t.get("id"), int)},
                  config if isinstance(config, str) else "")
    if not job.annotation_ids:
        raise EventError(f"{action}: annotations without integer ids")
    return job
