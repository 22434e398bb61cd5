"""bf16 and fp16 autocast against fp32, per preset, on identical weights and images, measured in one run.

    python benchmarks/autocast_parity.py --device cuda          # what benchmarks/gpu_check.sh runs
    python benchmarks/autocast_parity.py --device cpu --per-side 8 --presets fast   # a CPU smoke run (CPUs run
                                                                                    # fp32 always: all equal)

For each preset (random weights: SAM2 perturbed as in benchmarks/paper_parity.py so the IoU gate is exercised), one
engine's backbones run the same target under each precision (fresh caches each time): every prompt's predicted IoU
and gate decision against fp32's, the detections' mask IoU, class and score against fp32's best-matching one, the
predict's seconds and peak GPU memory. The engine's tolerance for adopting a faster path is the same: gate decisions
identical, masks of IoU >= 0.999, scores within 1e-4 (issue 18). Prints and writes one JSON document.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ntt_engine import Engine, EngineConfig  # noqa: E402
from generated_samples import generated_samples  # noqa: E402
from paper_parity import perturb_dinov2, perturb_sam2  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")


def one_run(base: Engine, precision: str, memory, target: np.ndarray, per_side: int) -> dict:
    from ntt_engine.prompting import paper_grid

    base.encoder.precision = base.proposer.precision = precision
    engine = Engine(base.config, encoder=base.encoder, proposer=base.proposer)  # fresh caches
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    detected = engine.detect(target, memory=memory)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    embedding = engine.proposer.embed(target)
    quality = engine.proposer.propose(embedding, paper_grid(target.shape[:2], per_side)).quality
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else None
    return {"seconds": seconds, "detected": detected, "quality": quality, "peak_gpu_mib": peak}


def against(fp32: dict, other: dict, gate: float) -> dict:
    a, b = fp32["detected"].instances, other["detected"].instances
    row = {"gate_decisions_differ": int(((fp32["quality"] > gate) != (other["quality"] > gate)).sum()),
           "pred_iou_max_abs_diff": float((fp32["quality"] - other["quality"]).abs().max()),
           "detections": [len(a), len(b)]}
    if a and b:
        fa = torch.from_numpy(np.stack([i.mask for i in a])).flatten(1).float()
        fb = torch.from_numpy(np.stack([i.mask for i in b])).flatten(1).float()
        inter = fa @ fb.T
        iou = inter / (fa.sum(1, keepdim=True) + fb.sum(1) - inter).clamp(min=1)
        best, match = iou.max(1)
        row.update(mask_iou_min=round(float(best.min()), 6),
                   same_class=sum(x.label == b[j].label for x, j in zip(a, match.tolist())),
                   score_max_abs_diff=max(abs(x.score - b[j].score) for x, j in zip(a, match.tolist())))
    row["within_tolerance"] = bool(row["gate_decisions_differ"] == 0 and row["detections"][0] == row["detections"][1]
                                   and row.get("mask_iou_min", 1.0) >= 0.999
                                   and row.get("score_max_abs_diff", 0.0) <= 1e-4)
    return row


def measure(preset: str, args: argparse.Namespace, samples: list) -> dict:
    target = samples[-1][0]
    config = EngineConfig.preset(preset, random_weights=True, device=args.device, points_per_side=args.per_side,
                                 precision="fp32")
    engine = Engine(config)
    perturb_sam2(engine.proposer, samples[0][0])
    perturb_dinov2(engine.encoder)
    for i, (image, labels, masks) in enumerate(samples[1:]):
        engine.add_reference(f"ref{i}", image, labels, masks)
    runs = {p: one_run(engine, p, engine.memory, target, args.per_side) for p in PRECISIONS}
    return {"seconds": {p: round(r["seconds"], 3) for p, r in runs.items()},
            "peak_gpu_mib": {p: r["peak_gpu_mib"] for p, r in runs.items()},
            "against_fp32": {p: against(runs["fp32"], runs[p], config.iou_threshold) for p in PRECISIONS[1:]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "fast"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--per-side", type=int, default=32)
    parser.add_argument("--size", default="640x480", help="image WxH")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "autocast_parity.json")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    samples = generated_samples("ntt-autocast-", images=3, classes=2, seed=3, size=(width, height),
                                negative_fraction=0.0)
    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
              "torch": torch.__version__, "image": [height, width], "prompts": args.per_side ** 2,
              "presets": {preset: measure(preset, args, samples) for preset in args.presets}}
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
