"""Engine configuration and presets (ALGORITHM.md §5 and §10 for `paper`, §9/§11 switches for the others)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRESETS = ("paper", "fast", "synthetic")


@dataclass(frozen=True)
class EngineConfig:
    preset_name: str = "paper"
    # --- backbones (names from ntt_engine.checkpoints.REGISTRY, or the shipped test backbones) ---
    encoder: str = "dinov2_vitl14"
    encoder_checkpoint: str | None = None  # local path or URL overriding the registry
    encoder_sha256: str | None = None  # pin a digest for the encoder checkpoint
    encoder_input_size: int = 518  # DINOv2 input side (pixels, multiple of 14)
    proposer: str = "sam2_hiera_large"
    proposer_checkpoint: str | None = None
    proposer_sha256: str | None = None
    add_no_mem_embed: bool = False  # the reference implementation omits it (ALGORITHM.md §3.2)
    random_weights: bool = False  # smoke tests only: no checkpoint is loaded, predictions are meaningless
    input_recipe: str = "sam2"  # pixels → tensors: "reference" (paper: the reference's exact steps) or "sam2"
    # --- proposals (§3) ---
    points_per_side: int = 32
    points_batch_size: int = 0  # prompts per decoder batch (0 = auto: 256 on a GPU, 4 on a CPU); leftovers kept
    iou_threshold: float = 0.4  # keep proposals with predicted IoU strictly above this
    prompting: str = "grid"  # "grid" (paper: points_per_side² clicks) or "similarity" (ALGORITHM.md §11)
    coarse_grid_per_side: int = 6  # similarity prompting: recall floor
    max_similarity_prompts: int = 48  # similarity prompting: at most this many peaks per memory state
    similarity_level_fraction: float = 0.8  # a peak must exceed this × the class's reference self-similarity
    # --- references (§2.1) ---
    reference_context: float = 0.2
    reference_crop: bool = True  # paper: encode an object-centred crop per reference; False: pool the whole image
    reference_mask_sampling: str = "nearest"  # "nearest" (paper: patch corner) or "area" (coverage, §9.4)
    max_references_per_class: int | None = None  # the memory length per class (None: every reference)
    keep_references: str = "first"  # which ones the cap keeps active: "first" or "latest" (the rest held back)
    # --- matching and selection (§4) ---
    nms_threshold: float = 0.5
    nms_cap_factor: int = 8
    merge_exponent: float = 0.5
    merge_at_proposal_resolution: bool = False  # §9.8: IoS at the proposal resolution instead of full resolution
    max_instances: int = 100
    use_negatives: bool = False  # §9.5: negative prototypes mined from negative images
    negative_temperature: float = 0.8
    # corrections (issue 10): predictions an annotator deleted/relabelled, stored as negative examples of their
    # class, fade look-alikes in matching. On in every preset: negatives only exist once someone corrected something.
    learn_from_corrections: bool = True
    correction_temperature: float = 0.05
    # --- input limits ---
    max_image_pixels: int = 40_000_000  # refuse larger images before decoding (decompression bombs: 3 bytes a pixel)
    max_image_side: int = 1024  # the working size: larger images are downscaled first (memory per image bounded
    # whatever the resolution; the backbones see 1024 px at most anyway); masks are mapped back one at a time
    # --- runtime ---
    device: str = "auto"
    precision: str = "auto"  # "auto" = bf16/fp16 autocast on CUDA, fp32 on CPU; "fp32" always (paper parity)
    num_threads: int | None = None
    cache_bytes: int = 512 * 1024 * 1024

    @staticmethod
    def preset(name: str, **overrides: Any) -> "EngineConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        base: dict[str, Any] = {"preset_name": name}
        if name == "paper":
            # the reference runs fp32 (trainer.precision: 32) and its exact input steps. Decoder batches stay auto:
            # 256 on a GPU as the reference; 4 on a CPU, bit-identical there at a fraction of the peak memory
            # (benchmarks/paper_parity.py: 2.2 vs 10 GiB at 16) and 2.7x faster (benchmarks/bench_decoder.py)
            base.update(precision="fp32", input_recipe="reference")
        if name == "fast":
            # whole-image reference pooling: references live at the targets' scale (which also calibrates the
            # similarity levels for prompting) and a labelled image that was predicted costs no second forward
            base.update(encoder="dinov2_vits14", proposer="sam2.1_hiera_tiny", prompting="similarity",
                        reference_crop=False, reference_mask_sampling="area", merge_at_proposal_resolution=True)
        elif name == "synthetic":
            base.update(encoder="test_colour_texture", proposer="test_connected_components",
                        encoder_input_size=224, points_per_side=24, reference_crop=False,
                        reference_mask_sampling="area", merge_at_proposal_resolution=True)
        return dataclasses.replace(EngineConfig(), **{**base, **overrides})

    @staticmethod
    def from_file(path: str | Path) -> "EngineConfig":
        """A JSON file: {"preset": "fast", ...overrides}."""
        data = json.loads(Path(path).read_text())
        name = data.pop("preset", "paper")
        unknown = set(data) - {f.name for f in dataclasses.fields(EngineConfig)}
        if unknown:
            raise ValueError(f"{path}: unknown engine config keys {sorted(unknown)}")
        return EngineConfig.preset(name, **data)

    def __post_init__(self) -> None:
        if self.input_recipe not in ("reference", "sam2"):
            raise ValueError(f"input_recipe must be 'reference' or 'sam2', got {self.input_recipe!r}")
        if self.prompting not in ("grid", "similarity"):
            raise ValueError(f"prompting must be 'grid' or 'similarity', got {self.prompting!r}")
        if self.keep_references not in ("first", "latest"):
            raise ValueError(f"keep_references must be 'first' or 'latest', got {self.keep_references!r}")
        if self.reference_mask_sampling not in ("nearest", "area"):
            raise ValueError(f"reference_mask_sampling must be 'nearest' or 'area', got "
                             f"{self.reference_mask_sampling!r}")

    def decoder_batch(self, device: str) -> int:
        """Small batches on CPUs: a batch of 16 prompts allocates 64 MiB tensors that glibc maps and unmaps each
        time (page faults: 40 % of the decoder's time), while 4 stay in the heap; GEMMs of 16 rows or more round
        alike, and the IoU head of a smaller batch is padded to 16 rows, so 4 gives the reference's 256 bit for bit
        (benchmarks/bench_decoder.py, tests/test_sam2_exact_speedups.py)."""
        if self.points_batch_size > 0:
            return self.points_batch_size
        return 256 if device.startswith("cuda") else 4

    def config_id(self) -> str:
        """Short stable id of everything that changes predictions (not runtime knobs)."""
        runtime = {"device", "num_threads", "cache_bytes", "points_batch_size"}
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in runtime}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.preset_name}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
