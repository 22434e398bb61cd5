"""Annotations → project memory: the work behind webhooks and resyncs.

Rules (one memory reference id per annotation, f"annotation:{id}"):
- a submitted annotation: each BrushLabels / PolygonLabels / RectangleLabels region of a configured label becomes a
  reference (rectangles become masks through SAM); an update replaces the annotation's references;
- an annotation that marks nothing on the image (empty result): its image is a negative;
- an annotation whose regions are all unusable (unknown labels, bad RLE...): contributes nothing (and drops what an
  earlier version of it contributed), with a log line per skipped region;
- a cancelled (skipped) annotation adds nothing; if an earlier version of the same annotation had been submitted,
  its references are removed, since the annotator withdrew that labeling;
- a deleted annotation: its references are removed;
- an event that changes nothing (a duplicate delivery, a forged "update" that the API re-read shows unchanged) leaves
  the memory and its revision as they are: the revision, hence model_version, moves once per real change;
- an annotation whose `result` is not a list is malformed: ignored with a log line (not taken for an empty one);
  one malformed annotation or task (a bad image URL, `data` that is not an object...) is skipped with a log line and
  never costs the other annotations of its event or resync.
With an API key, an event naming more than MAX_EVENT_IDS annotations is not read id by id (one forged webhook would
cost thousands of Label Studio reads): it becomes one incremental resync of its project (paged task reads, bounded by
what Label Studio really holds; unchanged annotations are not recomputed).
Several worker processes may apply one annotation's events out of order: an event older (updated_at) than what the
memory holds, and any event about a deleted annotation (tombstones in the project state), are ignored.
With LABEL_STUDIO_API_KEY set, webhook payloads are only notifications: annotations, tasks and the label config
are re-read from the API (a 404 means deleted, or a forged webhook). Without a key the payload is used as is.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from labelstudio_backend.fetch.images import ImageFetchError
from labelstudio_backend.labelstudio.label_config import LabelConfig, LabelConfigError, parse_label_config
from labelstudio_backend.labelstudio.regions import geometry_items
from labelstudio_backend.labelstudio.ids import integer_id
from labelstudio_backend.labelstudio.webhooks import ANNOTATION_ACTIONS, DELETE_ACTIONS, SYNC, SyncJob
from labelstudio_backend.learn.corrections import (IdRegion, Learned, empty_annotation_effort, learn,
                                                   own_version_pattern, parse_regions)
from labelstudio_backend.learn.noop_events import is_older, same_entries, same_negative
from labelstudio_backend.learn.resync import FullResync
from labelstudio_backend.runtime import Runtime
from labelstudio_backend.learn.thumbnails import NEGATIVE_IMAGE, Thumbnail, image_thumbnail
from labelstudio_backend.store.projects import AnnotationRecord, ProjectSnapshot, ref_id
from labelstudio_backend.store.thumbnails import ThumbnailStore
from ntt_engine import Engine

log = logging.getLogger(__name__)

MAX_TOMBSTONES = 10_000  # deleted annotation ids remembered per project (Label Studio never reuses ids)
MAX_EVENT_IDS = 100  # API mode: more annotation ids in one event are read through one (paged) resync instead


@dataclass
class Prepared:
    """One annotation with its image loaded and regions parsed (done outside the project lock)."""

    annotation_id: int
    task_id: int | None
    updated_at: str | None
    cancelled: bool = False
    image: np.ndarray | None = None
    annotation: dict = field(default_factory=dict)
    task: dict | None = None
    regions: list[IdRegion] = field(default_factory=list)
    has_geometry: bool = False  # False: the annotation marks nothing on the image (a negative)
    learned: Learned = field(default_factory=Learned)  # pooled outside the lock (learn/corrections.py)


class Synchronizer(FullResync):
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    # ----- dispatch -----
    def queued_form(self, job: SyncJob) -> SyncJob | None:
        """What the event queue holds for `job` in API mode: only its ids (the worker re-reads the rest), or, when it
        names more than MAX_EVENT_IDS annotations (too many to read one by one), one resync of its project, which
        the queue merges with a resync already waiting (30 such events cost one resync, not 30); None (nothing to
        queue) for such an event without a project id."""
        count = len(job.annotation_ids)
        if count <= MAX_EVENT_IDS:
            return job.ids_only()
        self.rt.metrics.add("events_coalesced")
        if job.project_id is None:
            log.warning("%s names %d annotations (more than %d) and no project; ignored", job.action, count,
                        MAX_EVENT_IDS)
            return None
        log.info("%s names %d annotations (more than %d): queued as a resync of project %d", job.action, count,
                 MAX_EVENT_IDS, job.project_id)
        return SyncJob(SYNC, job.project_id)

    def handle(self, job: SyncJob) -> None:
        if job.action in ANNOTATION_ACTIONS:
            self.on_annotations(job)
        elif job.action in DELETE_ACTIONS:
            self.on_deleted(job)
        elif job.is_resync:
            if self.rt.api is None:
                log.warning("%s for project %s: a resync needs LABEL_STUDIO_API_KEY (and LABEL_STUDIO_URL) to "
                            "read the annotations; nothing to do", job.action, job.project_id)
                return
            self.resync(job.project_id)
        else:
            log.debug("ignoring %s", job.action)

    def mark_unsynced(self, project_id: int | None) -> None:
        """After a failed event in API mode: the next /setup resyncs the project, so nothing stays lost."""
        if self.rt.api is None or project_id is None or not self.rt.store.exists(project_id):
            return  # a project never stored has nothing to resync, and a forged id must not create a directory
        try:
            with self.rt.store.edit(project_id) as snap:
                snap.state.synced_at = snap.state.sync_started_at = None
        except Exception:  # noqa: BLE001 - best effort, already failing
            log.exception("project %d: could not flag it for a resync", project_id)

    # ----- created / updated -----
    def on_annotations(self, job: SyncJob) -> None:
        if self.rt.api is None:
            log.info("%s: using the webhook payload as is (LABEL_STUDIO_API_KEY is not set, nothing to verify "
                     "it against)", job.action)
            if job.project_id is None:
                log.warning("%s without a project id; ignored", job.action)
                return
            only_task = next(iter(job.tasks.values())) if len(job.tasks) == 1 else None
            pairs = [(a, job.tasks.get(integer_id(a.get("task"))) or only_task) for a in job.annotations]
            self.apply(job.project_id, self._payload_config(job), pairs)
            return
        by_project: dict[int, list[tuple[dict, dict | None]]] = {}
        configs: dict[int, LabelConfig] = {}
        for annotation_id in job.annotation_ids:
            annotation = self.rt.api.get_annotation(annotation_id)
            if annotation is None:
                log.warning("annotation %d is not in Label Studio (deleted since, or a forged webhook)",
                            annotation_id)
                if job.project_id is not None:
                    self.remove(job.project_id, [annotation_id])
                continue
            known_project = integer_id(annotation.get("project")) or job.project_id
            task = self.rt.api.get_task(annotation["task"], known_project) \
                if isinstance(annotation.get("task"), int) else None
            project_id = integer_id((task or {}).get("project")) or integer_id(annotation.get("project"))
            if project_id is None or task is None:
                log.warning("annotation %d: its task or project could not be read; ignored", annotation_id)
                continue
            if project_id not in configs:
                config = self._api_config(project_id)
                if config is None:
                    continue
                configs[project_id] = config
            by_project.setdefault(project_id, []).append((annotation, task))
        for project_id, pairs in by_project.items():
            self.apply(project_id, configs[project_id], pairs)

    def _payload_config(self, job: SyncJob) -> LabelConfig | None:
        try:
            return parse_label_config(job.label_config)
        except LabelConfigError:
            state = self.rt.store.snapshot(job.project_id).state
            try:
                return self.rt.label_config(state)
            except LabelConfigError as exc:
                log.warning("project %s: %s; the annotation cannot be used", job.project_id, exc)
                return None

    def _api_config(self, project_id: int) -> LabelConfig | None:
        project = self.rt.api.get_project(project_id)
        if project is None:
            log.warning("project %d is not in Label Studio; ignored", project_id)
            return None
        try:
            return parse_label_config(project.get("label_config", ""))
        except LabelConfigError as exc:
            log.warning("project %d: %s", project_id, exc)
            return None

    # ----- deleted -----
    def on_deleted(self, job: SyncJob) -> None:
        ids = job.annotation_ids
        if self.rt.api is not None:
            confirmed = []
            for annotation_id in ids:
                if self.rt.api.get_annotation(annotation_id) is None:
                    confirmed.append(annotation_id)
                else:
                    log.warning("ANNOTATIONS_DELETED names annotation %d, which Label Studio still has; ignored",
                                annotation_id)
            ids = confirmed
        if job.project_id is None:
            log.warning("ANNOTATIONS_DELETED without a project id; ignored")
            return
        self.remove(job.project_id, ids)

    def remove(self, project_id: int, annotation_ids: Iterable[int]) -> int:
        """Drop what these annotations contributed and remember them as deleted, so a late event cannot revive
        one. With an API key, unknown ids get no tombstone: an unauthenticated webhook must not be able to block
        annotations that do not exist yet."""
        ids = list(annotation_ids)
        current = self.rt.store.snapshot(project_id)
        known = [i for i in ids if ref_id(i) in current.memory or str(i) in current.state.annotations]
        tombstones = ids if self.rt.api is None else known
        if not tombstones:
            return 0
        engine = self.rt.engine()
        with self.rt.store.edit(project_id) as snap:  # linear in the ids: 20,000 of them hold the lock for ms
            for annotation_id in tombstones:
                self._forget(engine, snap, annotation_id)
            already = set(snap.state.deleted)
            fresh = list(dict.fromkeys(i for i in tombstones if i not in already))
            snap.state.deleted = (snap.state.deleted + fresh)[-MAX_TOMBSTONES:]
        self.rt.metrics.add("annotations_removed", len(known))
        return len(known)

    def _forget(self, engine: Engine, snap: ProjectSnapshot, annotation_id: int) -> None:
        if ref_id(annotation_id) in snap.memory:
            engine.remove_reference(ref_id(annotation_id), memory=snap.memory)
        if snap.state.annotations.pop(str(annotation_id), None) is not None:
            try:
                self._thumbnails(snap).remove(annotation_id)
            except OSError as exc:  # never shown again: its record is gone
                log.warning("annotation %d: gallery thumbnails not removed: %s", annotation_id, exc)

    # ----- applying -----
    def apply(self, project_id: int, config: LabelConfig | None, pairs: list[tuple[dict, dict | None]]) -> None:
        """Load images, parse regions and pool reference vectors without the project lock (the slow part), then
        store the results under it (milliseconds)."""
        if config is None:
            return
        prepared = [p for p in (self._prepare_isolated(config, a, t) for a, t in pairs) if p is not None]
        if not prepared:
            return
        engine = self.rt.engine()
        for item in list(prepared):
            try:
                self._pool(engine, item, config, project_id)
            except Exception:  # noqa: BLE001 - one annotation that breaks the encoder must not sink the others
                log.exception("annotation %d: its regions could not be pooled; skipped", item.annotation_id)
                self.rt.metrics.add("annotations_failed")
                prepared.remove(item)
        with self.rt.store.edit(project_id) as snap:
            if not snap.state.label_config:
                snap.state.label_config = config.xml
            for item in prepared:
                self._store(engine, snap, item)

    def _prepare_isolated(self, config: LabelConfig, annotation: Any, task: Any) -> Prepared | None:
        try:
            return self._prepare(config, annotation, task)
        except Exception as exc:  # noqa: BLE001 - a malformed annotation is skipped, the rest of the event goes on
            annotation_id = annotation.get("id") if isinstance(annotation, dict) else None
            log.error("annotation %s: malformed (%s: %s); skipped, the other annotations go on", annotation_id,
                      type(exc).__name__, exc)
            self.rt.metrics.add("annotations_malformed")
            return None

    def _prepare(self, config: LabelConfig, annotation: dict, task: dict | None) -> Prepared | None:
        annotation_id = integer_id(annotation.get("id"))
        if annotation_id is None:
            log.warning("an annotation without an integer id; ignored")
            return None
        task_id = integer_id(annotation.get("task")) or integer_id((task or {}).get("id"))
        item = Prepared(annotation_id, task_id, annotation.get("updated_at"))
        if annotation.get("was_cancelled"):
            item.cancelled = True
            return item
        if not isinstance(annotation.get("result"), list):
            log.warning("annotation %d (task %s): 'result' is %s, not a list of regions; ignored", annotation_id,
                        task_id, type(annotation.get("result")).__name__)
            self.rt.metrics.add("annotations_malformed")
            return None
        if task is not None and not isinstance(task, dict):
            task = None
        named = integer_id(annotation.get("task"))
        if task is not None and named is not None and integer_id(task.get("id")) not in (None, named):
            log.warning("annotation %d names task %d, but the task it came with is %s: its image is not that "
                        "task's; ignored", annotation_id, named, task.get("id"))
            self.rt.metrics.add("annotations_malformed")
            return None
        data = (task or {}).get("data")
        if not isinstance(data, dict):
            log.warning("annotation %d (task %s): the task's 'data' is %s, not an object; ignored", annotation_id,
                        task_id, type(data).__name__)
            self.rt.metrics.add("annotations_malformed")
            return None
        url = data.get(config.value_key)
        try:
            item.image = self.rt.images.load(url, task_id)
        except ImageFetchError as exc:
            log.error("annotation %d (task %s): cannot read the image: %s; the memory is unchanged",
                      annotation_id, task_id, exc)
            self.rt.metrics.add("image_errors")
            return None
        item.annotation, item.task = annotation, task
        item.regions, skipped = parse_regions(annotation.get("result"), config, item.image.shape[:2])
        item.has_geometry = bool(geometry_items(annotation["result"]))
        for reason in skipped:
            log.warning("annotation %d: skipped %s", annotation_id, reason)
        self.rt.metrics.add("regions_skipped", len(skipped))
        return item

    def _pool(self, engine: Engine, item: Prepared, config: LabelConfig, project_id: int) -> None:
        """Regions → memory entries and calibration observations, not yet stored (learn/corrections.py)."""
        if not item.cancelled and not item.has_geometry:  # an image without objects: what did the prediction cost?
            try:
                item.learned = Learned(effort=empty_annotation_effort(
                    engine, item.image, config, item.annotation, item.task, own_version_pattern(engine),
                    self.rt.api.get_prediction if self.rt.api is not None else None))
            except Exception as exc:  # noqa: BLE001 - the figures are secondary: the annotation is still learnt
                log.warning("annotation %d: its effort could not be counted: %s", item.annotation_id, exc)
            try:  # and its picture in the dashboard's gallery
                item.learned.thumbnails = [Thumbnail("", NEGATIVE_IMAGE, image_thumbnail(item.image))]
            except Exception as exc:  # noqa: BLE001 - a picture for the dashboard only
                log.warning("annotation %d: no gallery thumbnail: %s", item.annotation_id, exc)
        if item.cancelled or not item.has_geometry or not item.regions:
            return
        memory = self.rt.store.snapshot(project_id).memory
        item.learned = learn(engine, item.image, config, item.annotation, item.task, item.regions, memory,
                             ref_id(item.annotation_id), own_version_pattern(engine),
                             self.rt.api.get_prediction if self.rt.api is not None else None,
                             self._learns_from_corrections(engine), self.rt.settings.calibrate_leave_one_out,
                             self.rt.settings.redraw_iou)
        self.rt.metrics.add("regions_merged", item.learned.merged)
        self.rt.metrics.add("correction_negatives", item.learned.negatives)

    def _learns_from_corrections(self, engine: Engine) -> bool:
        switch = self.rt.settings.learn_from_corrections  # NTT_LEARN_FROM_CORRECTIONS, else the engine config's
        return engine.config.learn_from_corrections if switch is None else switch

    def _store(self, engine: Engine, snap: ProjectSnapshot, item: Prepared) -> None:
        key, ref = str(item.annotation_id), ref_id(item.annotation_id)
        if item.annotation_id in snap.state.deleted:
            log.info("annotation %d was deleted; ignoring a late event about it", item.annotation_id)
            return
        previous = snap.state.annotations.get(key)
        if previous and is_older(item.updated_at, previous.updated_at):
            log.info("annotation %d: this event (%s) is older than what the memory holds (%s); ignored",
                     item.annotation_id, item.updated_at, previous.updated_at)
            return
        if item.cancelled:
            if ref in snap.memory or previous:
                log.info("annotation %d was cancelled: removing what it contributed before", item.annotation_id)
                self._forget(engine, snap, item.annotation_id)
            else:
                log.info("annotation %d was cancelled (skipped): nothing to learn", item.annotation_id)
            return
        record = AnnotationRecord(item.task_id, "none", [], 0, item.updated_at)
        entries = item.learned.entries
        if not item.has_geometry:
            record.kind = "negative"
            record.effort = item.learned.effort
            if same_negative(engine, snap, ref, previous, item.updated_at):
                log.info("annotation %d: already a negative image; memory revision stays %d", item.annotation_id,
                         snap.memory.revision)
                self.rt.metrics.add("events_unchanged")
            else:
                engine.add_negative(ref, item.image, memory=snap.memory)
                self.rt.metrics.add("negatives_added")
        elif entries:
            labels = sorted({entry.label for entry in entries if not entry.negative})
            record.kind, record.labels, record.regions = "reference", labels, item.learned.references
            record.negatives, record.source = item.learned.negatives, item.learned.source
            # a score outside [0, 1] (another model's, or a hand-edited payload) says nothing about ours: never stored
            record.observations = [[o.label, round(float(o.score), 5), bool(o.correct)]
                                   for o in item.learned.observations if 0.0 <= o.score <= 1.0]
            record.missed = dict(item.learned.missed)
            record.effort = item.learned.effort
            if same_entries(snap.memory, ref, entries):
                if previous is not None:  # a duplicate: its leave-one-out ran against another memory, and
                    # thresholds that moved without the revision would give one model_version two answers
                    record.observations, record.missed = previous.observations, previous.missed
                log.info("annotation %d: unchanged (%d reference(s) %s); memory revision stays %d",
                         item.annotation_id, item.learned.references, labels, snap.memory.revision)
                self.rt.metrics.add("events_unchanged")
            else:
                snap.memory.set_reference(ref, entries)
                log.info("annotation %d: %d reference(s) %s, %d negative example(s) -> memory revision %d",
                         item.annotation_id, item.learned.references, labels, item.learned.negatives,
                         snap.memory.revision)
                self.rt.metrics.add("references_added", item.learned.references)
        elif ref in snap.memory:
            engine.remove_reference(ref, memory=snap.memory)
            log.warning("annotation %d: no usable region left; removed its earlier references", item.annotation_id)
        record.thumbs = self._keep_thumbnails(snap, item, record.kind)
        snap.state.annotations[key] = record

    def _keep_thumbnails(self, snap: ProjectSnapshot, item: Prepared, kind: str) -> list[list[str]]:
        """The annotation's gallery thumbnails on disk (none for one that taught nothing); what they show."""
        shown = item.learned.thumbnails if kind in ("reference", "negative") else []
        try:
            self._thumbnails(snap).replace(item.annotation_id, [t.png for t in shown])
        except OSError as exc:  # the gallery shows a blank tile; the memory is what matters
            log.warning("annotation %d: gallery thumbnails not written: %s", item.annotation_id, exc)
            return []
        return [[t.label, t.kind] for t in shown]

    def _thumbnails(self, snap: ProjectSnapshot) -> ThumbnailStore:
        return ThumbnailStore(self.rt.store.project_dir(snap.state.project_id))
