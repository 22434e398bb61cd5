"""`paper`'s prediction of one image against what the reference runs for it, side by side in one run.

    python benchmarks/bench_side_by_side.py                 # 32×32 grid, 2 threads, one round
    python benchmarks/bench_side_by_side.py --per-side 16   # quicker

The reference (no-time-to-train) decodes the 32×32 grid with SAM2's image predictor in batches of 256, multimask
output, then matches. Reconstructed here from the official `sam2` package: `SAM2ImagePredictor._predict` on the same
image embedding (so only the decoding differs: the encoders, the gate and the matching are the engine's own, run
the same way for both), each prompt's best of the 3 masks by predicted IoU. Same weights (random SAM2.1 hiera-tiny and
DINOv2 ViT-L/14 at 518, perturbed as in benchmarks/paper_parity.py so that the IoU gate and NMS are exercised), same
image, same threads; a fresh engine for every run (no cached embedding or analysis), rounds alternating.

Prints and writes (benchmarks/results/side_by_side_<device>.json): the median seconds of each, their ratio, the gate
decisions that differ (0 expected), the detections' mask IoU and score differences, and peak RSS after each.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ntt_engine import Engine, EngineConfig  # noqa: E402
from ntt_engine.backbones.dinov2 import DinoV2Encoder  # noqa: E402
from ntt_engine.backbones.sam2_proposer import Sam2ProposalGenerator  # noqa: E402
from ntt_engine.types import Proposals  # noqa: E402
from generated_samples import generated_samples  # noqa: E402
from paper_parity import perturb_dinov2, perturb_sam2  # noqa: E402

GATE = 0.4


class ImagePredictorProposer:
    """The reference's decoding: sam2's SAM2ImagePredictor on the image's embedding, `batch` prompts at a time,
    multimask output, the best of the 3 masks by predicted IoU. Everything else is the wrapped proposer's."""

    def __init__(self, sam: Sam2ProposalGenerator, batch: int = 256):
        self.sam, self.batch = sam, batch
        self.gate_decisions: list[torch.Tensor] = []  # every prompt's quality, for the comparison

    def __getattr__(self, name: str):
        return getattr(self.sam, name)

    def propose(self, embedding, points_xy: np.ndarray, min_quality: float | None = None) -> Proposals:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        predictor = SAM2ImagePredictor(self.sam.model)
        predictor._features = {"image_embed": embedding.image_embed, "high_res_feats": list(embedding.high_res_feats)}
        predictor._orig_hw, predictor._is_image_set, predictor._is_batch = [embedding.image_size], True, False
        coords = self.sam._frame(np.asarray(points_xy, np.float32).reshape(-1, 2), embedding)  # as predict() frames
        logits, quality = [], []
        with torch.inference_mode():
            for start in range(0, len(coords), self.batch):
                chunk = coords[start:start + self.batch][:, None, :]
                labels = torch.ones((len(chunk), 1), dtype=torch.int, device=chunk.device)
                _, iou, low_res = predictor._predict(chunk, labels, multimask_output=True, return_logits=True)
                best = iou.argmax(dim=1)
                rows = torch.arange(len(chunk), device=iou.device)
                logits.append(low_res[rows, best].float().cpu())
                quality.append(iou[rows, best].float().cpu())
        proposals = Proposals(torch.cat(logits).clone(), torch.cat(quality).clone(), embedding.image_size)
        self.gate_decisions.append(proposals.quality)
        return proposals


def build(args: argparse.Namespace, samples: list) -> tuple[Sam2ProposalGenerator, DinoV2Encoder, object]:
    sam = Sam2ProposalGenerator("sam2.1_hiera_tiny", None, device=args.device, random_weights=True,
                                input_recipe="reference",
                                points_batch_size=EngineConfig.preset("paper").decoder_batch(args.device))
    perturb_sam2(sam, samples[0][0])
    dino = DinoV2Encoder("dinov2_vitl14", None, device=args.device, input_size=518, random_weights=True,
                         input_recipe="reference")
    perturb_dinov2(dino)
    config = EngineConfig.preset("paper", points_per_side=args.per_side, device=args.device)
    engine = Engine(config, encoder=dino, proposer=sam)
    for i, (image, labels, masks) in enumerate(samples[1:]):  # the target is one of them (see paper_parity.py)
        engine.add_reference(f"ref{i}", image, labels, masks)
    return sam, dino, engine.memory


def run(config: EngineConfig, dino, proposer, memory, target: np.ndarray) -> tuple[float, object]:
    engine = Engine(config, encoder=dino, proposer=proposer)  # fresh caches: nothing of an earlier run is reused
    started = time.perf_counter()
    detected = engine.detect(target, memory=memory)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, detected


def compare(ours, theirs) -> dict:
    """Each of our detections against the reconstruction's best-IoU detection (masks in the original pixels)."""
    a, b = ours.instances, theirs.instances
    if not a or not b:
        return {"detections": [len(a), len(b)]}
    fa = torch.from_numpy(np.stack([i.mask for i in a])).flatten(1).float()
    fb = torch.from_numpy(np.stack([i.mask for i in b])).flatten(1).float()
    inter = fa @ fb.T
    iou = inter / (fa.sum(1, keepdim=True) + fb.sum(1) - inter).clamp(min=1)
    best, match = iou.max(1)
    same_class = [x.label == b[j].label for x, j in zip(a, match.tolist())]
    return {"detections": [len(a), len(b)], "mask_iou_min": round(float(best.min()), 6),
            "identical_masks": int((best == 1).sum()), "same_class": int(sum(same_class)),
            "score_max_abs_diff": float(max(abs(x.score - b[j].score) for x, j in zip(a, match.tolist())))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-side", type=int, default=32, help="prompt grid per side (paper: 32)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="640x480", help="target image WxH")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))

    samples = generated_samples("ntt-side-", images=3, classes=2, seed=3, size=(width, height),
                                negative_fraction=0.0)
    target = samples[-1][0]
    sam, dino, memory = build(args, samples)
    config = EngineConfig.preset("paper", points_per_side=args.per_side, device=args.device)
    reference = ImagePredictorProposer(sam)
    seconds: dict[str, list[float]] = {"paper": [], "reconstruction": []}
    peak: dict[str, int] = {}
    for _ in range(args.rounds):
        ours_s, ours = run(config, dino, sam, memory, target)
        seconds["paper"].append(ours_s)
        peak.setdefault("after_paper_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        theirs_s, theirs = run(config, dino, reference, memory, target)
        seconds["reconstruction"].append(theirs_s)
        peak.setdefault("after_reconstruction_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)

    # gate decisions: every prompt's quality under our decoder, against the reconstruction's
    embedding = sam.embed(target)
    from ntt_engine.prompting import paper_grid
    ours_quality = sam.propose(embedding, paper_grid(target.shape[:2], args.per_side)).quality
    theirs_quality = reference.gate_decisions[-1]
    median = {name: statistics.median(values) for name, values in seconds.items()}
    result = {
        "setup": {"image": [height, width], "prompts": args.per_side ** 2, "threads": torch.get_num_threads(),
                  "device": args.device, "models": "sam2.1_hiera_tiny + dinov2_vitl14@518, random (perturbed)",
                  "reconstruction": "SAM2ImagePredictor._predict, batches of 256, multimask, best of 3 by IoU",
                  "paper_decoder_batch": config.decoder_batch(args.device), "torch": torch.__version__,
                  "machine": f"{platform.machine()}, {platform.python_version()}"},
        "seconds": seconds, "median_s": median,
        "speedup": round(median["reconstruction"] / median["paper"], 3),
        "gate_decisions_differ": int(((ours_quality > GATE) != (theirs_quality > GATE)).sum()),
        "pred_iou_max_abs_diff": float((ours_quality - theirs_quality).abs().max()),
        "detections": compare(ours, theirs), "peak_rss": peak,
    }
    print(json.dumps(result, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"side_by_side_{args.device.split(':')[0]}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"paper {median['paper']:.1f} s, reconstruction {median['reconstruction']:.1f} s: "
          f"{result['speedup']:.2f}x; gate decisions that differ: {result['gate_decisions_differ']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
