"""The engine: references in, instance masks out. Ties the stages together and caches per-image work.

    engine = Engine(EngineConfig.preset("fast"))
    engine.add_reference("img-1", image, labels=["cat"], masks=[cat_mask])
    instances = engine.predict(other_image)
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .backbones import build_encoder, build_proposer, pick_device
from .cache import ByteLRU
from .config import EngineConfig
from .corrections import LabelledMask
from .image_io import ImageSource, bounded, load_image
from .matching import MatchSettings, class_aware_nms, classify, nms_cap, select_detections, upsample_logits
from .memory import MemoryBank, MemoryEntry, MemoryFormatError
from .pooling import pool_proposals
from .prompting import coarse_grid, inside_masks, paper_grid, similarity_peaks
from .protocols import FeatureEncoder, ProposalGenerator
from .references import ReferenceError, check_masks, pool_references
from .timing import StageTimes
from .prepared import ImageAnalysis, PreparedImage
from .types import Detected, Instance, PatchFeatures, PromptSet, Proposals

log = logging.getLogger(__name__)

MINED_NEGATIVES_PER_IMAGE = 10


class Engine:
    def __init__(self, config: EngineConfig | None = None, encoder: FeatureEncoder | None = None,
                 proposer: ProposalGenerator | None = None, memory: MemoryBank | None = None):
        self.config = config or EngineConfig.preset("paper")
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        self.encoder = encoder if encoder is not None else build_encoder(self.config)
        self.proposer = proposer if proposer is not None else build_proposer(self.config)
        self.memory = memory if memory is not None else self.new_memory()
        self._check_memory(self.memory)
        self._analyses: ByteLRU[ImageAnalysis] = ByteLRU(self.config.cache_bytes)
        self._features: ByteLRU[PatchFeatures] = ByteLRU(self.config.cache_bytes // 4)
        self._embeddings: ByteLRU[Any] = ByteLRU(self.config.cache_bytes // 2)
        self._lock = threading.RLock()
        self.stage_times = StageTimes()
        self.settings = MatchSettings(self.config.nms_threshold,
                                      nms_cap(self.config.max_instances, self.config.nms_cap_factor),
                                      self.config.merge_exponent, self.config.max_instances,
                                      self.config.negative_temperature, self.config.correction_temperature)

    # ----- identity -----
    @property
    def model_id(self) -> str:
        """Config id plus the backbones' identities (weights included): what makes predictions comparable."""
        digest = hashlib.sha256(f"{self.config.config_id()}|{self.encoder.name}|{self.proposer.name}".encode())
        return f"{self.config.preset_name}-{digest.hexdigest()[:8]}"

    @property
    def model_version(self) -> str:
        """Engine id + memory revision (the backend adds its thresholds: labelstudio_backend/store/versions.py)."""
        return f"{self.model_id}.r{self.memory.revision}"

    def new_memory(self) -> MemoryBank:
        return MemoryBank(self.encoder.name, self.config.max_references_per_class, self.config.keep_references)

    def adopt_memory(self, memory: MemoryBank) -> MemoryBank:
        """Check that `memory` was built with this engine's encoder (raises MemoryFormatError) and return it."""
        self._check_memory(memory)
        return memory

    # ----- memory -----
    def _check_memory(self, memory: MemoryBank) -> None:
        if memory.encoder_name not in (None, self.encoder.name):
            raise MemoryFormatError(f"the memory was built with encoder {memory.encoder_name!r}, this engine uses "
                                    f"{self.encoder.name!r}; rebuild the memory from the references")
        memory.encoder_name = self.encoder.name
        memory.max_per_class = self.config.max_references_per_class
        memory.keep = self.config.keep_references

    def load_memory(self, path: str | Path) -> None:
        memory = MemoryBank.load(path)
        self._check_memory(memory)
        with self._lock:
            self.memory = memory

    def save_memory(self, path: str | Path) -> None:
        with self._lock:
            self.memory.save(path)

    def add_reference(self, ref_id: str, image: ImageSource, labels: Sequence[str],
                      masks: Sequence[np.ndarray] | None = None, boxes: np.ndarray | None = None,
                      image_key: str | None = None, memory: MemoryBank | None = None) -> int:
        """Store every (mask, label) of one image under `ref_id`, replacing what was there. Boxes (xyxy, original
        pixels) are turned into masks by the proposer. Returns the number of references stored. Atomic: on any
        error the memory is unchanged."""
        with self._lock:
            entries = self.pool_reference(image, labels, masks, boxes, image_key)
            memory = memory if memory is not None else self.memory
            memory.set_reference(ref_id, entries)
            log.info("reference %s: %d region(s) %s -> memory revision %d", ref_id, len(entries),
                     sorted({e.label for e in entries}), memory.revision)
            return len(entries)

    def pool_reference(self, image: ImageSource, labels: Sequence[str], masks: Sequence[np.ndarray] | None = None,
                       boxes: np.ndarray | None = None, image_key: str | None = None) -> list[MemoryEntry]:
        """The memory entries `add_reference` would store, without storing them (for callers that write the
        memory elsewhere, e.g. under a file lock). Raises ReferenceError / ImageLoadError on bad input."""
        with self._lock:
            prepared = self._prepare(image, image_key)
            if boxes is not None:
                masks = self._masks_from_boxes(prepared, np.asarray(boxes, np.float32).reshape(-1, 4))
            masks = check_masks(list(masks or []), list(labels), prepared.original_size, prepared.work_size)
            if not masks:
                raise ReferenceError("a reference needs at least one region; use add_negative for an image "
                                     "without any of the classes")
            work_masks = [self._to_work(mask, prepared) for mask in masks]
            pooled = pool_references(prepared.work, work_masks, list(labels), self._encode_crop,
                                     self.config.reference_crop, self.config.reference_context,
                                     self.config.reference_mask_sampling, lambda: self._whole_features(prepared))
            return [MemoryEntry(p.label, p.vector, level=p.level) for p in pooled]

    def pool_annotation(self, image: ImageSource, references: Sequence[LabelledMask],
                        negatives: Sequence[LabelledMask] = (), image_key: str | None = None) -> list[MemoryEntry]:
        """Entries of one corrected annotation: its objects (references) and the predictions the annotator
        rejected (negative examples of their predicted class, `negative=True`), pooled in one pass. Store them with
        `memory.set_reference(ref_id, entries)`: removing the annotation then removes its negatives too. Empty
        when both are empty (for an image without objects use add_negative)."""
        regions = [*references, *negatives]
        if not regions:
            return []
        entries = self.pool_reference(image, [r.label for r in regions], [r.mask for r in regions],
                                      image_key=image_key)
        return entries[:len(references)] + [dataclasses.replace(e, negative=True) for e in entries[len(references):]]

    def add_annotation(self, ref_id: str, image: ImageSource, references: Sequence[LabelledMask],
                       negatives: Sequence[LabelledMask] = (), image_key: str | None = None,
                       memory: MemoryBank | None = None) -> int:
        """`pool_annotation` stored under `ref_id` (replacing it); atomic. Returns the number of entries."""
        with self._lock:
            entries = self.pool_annotation(image, references, negatives, image_key)
            memory = memory if memory is not None else self.memory
            memory.set_reference(ref_id, entries)
            log.info("annotation %s: %d reference(s), %d negative example(s) -> memory revision %d", ref_id,
                     len(references), len(negatives), memory.revision)
            return len(entries)

    def add_negative(self, ref_id: str, image: ImageSource, image_key: str | None = None,
                     memory: MemoryBank | None = None) -> int:
        """Record an image that contains none of the classes. With `use_negatives`, its current false positives
        become negative prototypes (§9.5); returns how many were mined."""
        with self._lock:
            memory = memory if memory is not None else self.memory
            mined: list[MemoryEntry] = []
            if self.config.use_negatives:
                prepared = self._prepare(image, image_key)
                mined = self._mine_negatives(self._analyse(prepared, memory), memory)
            memory.set_reference(ref_id, mined, negative_image=True)
            log.info("negative image %s: %d mined false positive(s) -> memory revision %d", ref_id, len(mined),
                     memory.revision)
            return len(mined)

    def remove_reference(self, ref_id: str, memory: MemoryBank | None = None) -> None:
        with self._lock:
            memory = memory if memory is not None else self.memory
            memory.remove(ref_id)
            log.info("removed reference %s -> memory revision %d", ref_id, memory.revision)

    # ----- inference -----
    def predict(self, image: ImageSource, image_key: str | None = None,
                score_threshold: float = 0.0, memory: MemoryBank | None = None,
                thresholds: Mapping[str, float] | None = None) -> list[Instance]:
        """Instances in the original image's pixels, best score first. Empty when the memory has no classes.
        Kept: score > `score_threshold`, and score ≥ `thresholds[label]` for classes listed there (calibration)."""
        return self.detect(image, image_key, score_threshold, memory, thresholds).instances

    def detect(self, image: ImageSource, image_key: str | None = None,
               score_threshold: float = 0.0, memory: MemoryBank | None = None,
               thresholds: Mapping[str, float] | None = None) -> Detected:
        """`predict`'s instances, plus the class and score of every detection, including those under the
        thresholds (no mask is built for those): what a caller needs to say how certain the memory is."""
        with self._lock:
            memory = memory if memory is not None else self.memory
            prepared = self._prepare(image, image_key)
            analysis = self._analyse(prepared, memory)
            prototypes = memory.prototypes()
            negatives = memory.prototypes(negative=True) if self.config.use_negatives else None
            examples = memory.negative_examples() if self.config.learn_from_corrections else None
            references = memory.positive_examples() if examples is not None and len(examples) else None
            merge_size = None if self.config.merge_at_proposal_resolution else prepared.work.shape[:2]
            detections = select_detections(analysis.proposals.logits, analysis.proposals.quality, analysis.vectors,
                                           analysis.valid, prototypes, self.settings, merge_size, negatives,
                                           self.stage_times, examples, references)
            with self.stage_times.measure("output_masks"):
                instances = []
                keep = detections.score > score_threshold
                if thresholds:
                    floor = [thresholds.get(prototypes.labels[c], -1.0) for c in detections.label.tolist()]
                    keep &= detections.score >= torch.tensor(floor)
                index, label, score = detections.index[keep], detections.label[keep], detections.score[keep]
                masks = upsample_logits(analysis.proposals.logits[index], prepared.work_size)
                positives = memory.positive_examples()
                for mask, cls, value, proposal in zip(masks.numpy(), label.tolist(), score.tolist(), index.tolist()):
                    if mask.any():
                        name = prototypes.labels[cls]
                        instances.append(prepared.instance(name, float(value), mask,
                                                           float(analysis.proposals.quality[proposal]),
                                                           positives.nearest(analysis.vectors[proposal], name)))
            scores = tuple((prototypes.labels[c], float(v)) for c, v in zip(detections.label.tolist(),
                                                                          detections.score.tolist()))
            return Detected(instances, scores)

    def segment(self, image: ImageSource, prompts: PromptSet, image_key: str | None = None) -> list[Instance]:
        """Interactive prompting (clicks or boxes, original pixels) → masks labelled "" with the proposer's score."""
        with self._lock:
            prepared = self._prepare(image, image_key)
            proposals = self._segment(prepared, prompts)
            masks = upsample_logits(proposals.logits, prepared.work_size).numpy()
            return [prepared.instance("", float(q), m, float(q)) for m, q in zip(masks, proposals.quality)]

    def analyse(self, image: ImageSource, image_key: str | None = None,
                memory: MemoryBank | None = None) -> ImageAnalysis:
        with self._lock:
            return self._analyse(self._prepare(image, image_key), memory if memory is not None else self.memory)

    # ----- internals -----
    def _prepare(self, image: ImageSource, image_key: str | None) -> PreparedImage:
        original = load_image(image, self.config.max_image_pixels)
        if original.shape[0] * original.shape[1] > self.config.max_image_pixels:
            raise ValueError(f"image of {original.shape[1]}x{original.shape[0]} pixels is above max_image_pixels="
                             f"{self.config.max_image_pixels}")
        work, _ = bounded(original, self.config.max_image_side)
        if image_key is None:  # hashed in place: no second full-size copy
            digest = hashlib.sha1(np.ascontiguousarray(original).data)
            digest.update(str(original.shape).encode())
            image_key = digest.hexdigest()
        return PreparedImage(work, (original.shape[0], original.shape[1]), image_key)

    def _to_work(self, mask: np.ndarray, prepared: PreparedImage) -> np.ndarray:
        if prepared.work.shape[:2] == mask.shape:
            return mask
        size = (prepared.work.shape[1], prepared.work.shape[0])
        return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) >= 128

    def _embedding(self, prepared: PreparedImage) -> Any:
        embedding = self._embeddings.get(prepared.key)
        if embedding is None:
            with self.stage_times.measure("sam2_encoder"):
                embedding = self.proposer.embed(prepared.work)
            self._embeddings.put(prepared.key, embedding)
        return embedding

    def _encode(self, image: np.ndarray) -> PatchFeatures:
        with self.stage_times.measure("dinov2"):
            return self.encoder.encode(image)

    def _encode_crop(self, crop: np.ndarray) -> PatchFeatures:
        """A reference crop: encoders may prepare crops differently from whole images (the paper's DINOv2 does)."""
        with self.stage_times.measure("dinov2"):
            return getattr(self.encoder, "encode_crop", self.encoder.encode)(crop)

    def _whole_features(self, prepared: PreparedImage) -> PatchFeatures:
        analysis = self._analyses.get(prepared.key)
        if analysis is not None:
            return analysis.features
        features = self._features.get(prepared.key)
        if features is None:
            features = self._encode(prepared.work)
            self._features.put(prepared.key, features)
        return features

    def _analyse(self, prepared: PreparedImage, memory: MemoryBank) -> ImageAnalysis:
        analysis = self._analyses.get(prepared.key)
        size = prepared.work.shape[:2]
        pending = np.zeros((0, 2), np.float32)
        if analysis is None:
            features = self._whole_features(prepared)
            analysis = ImageAnalysis(features, Proposals.empty(size), torch.zeros((0, features.dim)),
                                     torch.zeros(0, dtype=torch.bool), np.zeros((0, 2), np.float32))
            pending = paper_grid(size, self.config.points_per_side) if self.config.prompting == "grid" \
                else coarse_grid(size, self.config.coarse_grid_per_side)
        if self.config.prompting == "similarity":
            prototypes = memory.prototypes()
            peaks = similarity_peaks(analysis.features, prototypes, prototypes.levels,
                                     self.config.similarity_level_fraction, self.config.max_similarity_prompts)
            pending = np.concatenate([peaks, pending])  # most similar first: they claim their objects early
        pending = _not_yet_prompted(pending, analysis.prompted)
        if len(pending):
            analysis = self._decode(prepared, analysis, pending)
            self._analyses.put(prepared.key, analysis)  # re-put: the entry grew
        elif prepared.key not in self._analyses:
            self._analyses.put(prepared.key, analysis)
        return analysis

    def _decode(self, prepared: PreparedImage, analysis: ImageAnalysis, points: np.ndarray) -> ImageAnalysis:
        """Decode `points` and add the proposals that pass the quality gate. Similarity prompting decodes in
        batches and skips points already covered by an accepted mask (one object needs one prompt)."""
        embedding = self._embedding(prepared)
        size = prepared.work.shape[:2]
        skip_covered = self.config.prompting == "similarity"
        batch = self.config.decoder_batch(pick_device(self.config.device)) if skip_covered else len(points)
        accepted, decoded = [analysis.proposals], []
        for start in range(0, len(points), batch):
            chunk = points[start:start + batch]
            if skip_covered:
                for done in accepted:
                    chunk = chunk[~inside_masks(chunk, done.logits, size)]
            if len(chunk) == 0:
                continue
            with self.stage_times.measure("decoder"):
                proposals = self.proposer.propose(embedding, chunk, min_quality=self.config.iou_threshold)
            if proposals.prompt_index is None and len(proposals) not in (0, len(chunk)):
                raise RuntimeError(f"proposer {self.proposer.name} returned {len(proposals)} proposals for "
                                   f"{len(chunk)} prompts")
            gated = proposals.select(torch.nonzero(proposals.quality > self.config.iou_threshold).flatten())
            accepted.append(Proposals(gated.logits, gated.quality, size))
            decoded.append(chunk)
        new = Proposals.concat(accepted[1:], size)
        with self.stage_times.measure("pooling"):
            vectors, valid = pool_proposals(analysis.features, new.masks)
        log.debug("decoded %d prompt(s), %d proposal(s) passed the gate", sum(map(len, decoded)), len(new))
        return ImageAnalysis(analysis.features, Proposals.concat([analysis.proposals, new], size),
                             torch.cat([analysis.vectors, vectors]), torch.cat([analysis.valid, valid]),
                             np.concatenate([analysis.prompted, *decoded]))

    def _segment(self, prepared: PreparedImage, prompts: PromptSet) -> Proposals:
        scale = prepared.scale
        scaled = PromptSet(np.asarray(prompts.points, np.float32).reshape(-1, 2) * scale,
                           np.asarray(prompts.point_labels, np.int64).reshape(-1),
                           np.asarray(prompts.boxes, np.float32).reshape(-1, 4) * scale)
        if len(scaled.points) == 0 and len(scaled.boxes) == 0:
            raise ValueError("a prompt needs at least one point or one box")
        if len(scaled.points) != len(scaled.point_labels):
            raise ValueError(f"{len(scaled.points)} points but {len(scaled.point_labels)} point labels")
        return self.proposer.segment(self._embedding(prepared), scaled)

    def _masks_from_boxes(self, prepared: PreparedImage, boxes: np.ndarray) -> list[np.ndarray]:
        height, width = prepared.original_size
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]) | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) \
            | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)
        if bad.any():
            raise ReferenceError(f"boxes {boxes[bad].tolist()} are empty or outside the {width}x{height} image")
        proposals = self._segment(prepared, PromptSet(boxes=boxes))
        return list(upsample_logits(proposals.logits, prepared.work_size).numpy())

    def _mine_negatives(self, analysis: ImageAnalysis, memory: MemoryBank) -> list[MemoryEntry]:
        prototypes = memory.prototypes()
        label, score = classify(analysis.vectors, analysis.valid, prototypes)
        if len(prototypes) == 0 or score.numel() == 0:
            return []
        keep = class_aware_nms(analysis.proposals.masks, analysis.proposals.quality, label,
                               self.settings.nms_threshold, self.settings.nms_cap)
        keep = keep[score[keep] > 0]
        keep = keep[torch.argsort(score[keep], descending=True)][:MINED_NEGATIVES_PER_IMAGE]
        return [MemoryEntry(prototypes.labels[int(label[i])], analysis.vectors[i].numpy().astype(np.float32), True)
                for i in keep]


def _not_yet_prompted(points: np.ndarray, prompted: np.ndarray, tolerance: float = 0.5) -> np.ndarray:
    """Drop points within `tolerance` pixels of one already decoded (and duplicates among themselves)."""
    if len(points) == 0:
        return points
    keys = np.round(points / tolerance).astype(np.int64)
    seen = {tuple(k) for k in np.round(prompted / tolerance).astype(np.int64)}
    keep = []
    for i, key in enumerate(map(tuple, keys)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return points[keep]
