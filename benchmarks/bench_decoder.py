"""SAM2's prompt decoder on one image, three ways in one run (alternating, same embedding and prompts):

- before: sam2's two-way transformer on the image embedding repeated per prompt, batches of 16 (the old CPU default);
- the same in batches of `--batch` (default 4: the CPU default now);
- the image's own work done once per batch (ntt_engine/backbones/sam2_decode.py), batches of `--batch`.

    python benchmarks/bench_decoder.py                         # sam2.1_hiera_tiny, the paper's 32×32 grid
    python benchmarks/bench_decoder.py --model sam2_hiera_large --prompts 256 --rounds 3

Random weights (the architecture's cost does not depend on them). Prints, per variant, the median wall seconds,
user and system CPU seconds and minor page faults (memory allocated and returned to the kernel: on a CPU, batches of
16 prompts allocate 64 MiB tensors that glibc maps and unmaps every time), the speed-up over `before`, and whether
every variant's outputs are bit-identical; writes benchmarks/results/bench_decoder_<device>.json.
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


def measure(proposer, embedding, points, batch: int, shared: bool) -> tuple[dict, object]:
    proposer.points_batch_size, proposer.share_image_work = batch, shared
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = proposer.propose(embedding, points)
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": seconds, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt}, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--prompts", type=int, default=1024, help="grid prompts (default 1024: the paper's 32×32)")
    parser.add_argument("--batch", type=int, default=0, help="prompts per decoder batch (0: the engine's default for "
                                                             "the device: 4 on a CPU, 256 on a GPU)")
    parser.add_argument("--before-batch", type=int, default=16, help="batch of the 'before' variant (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from ntt_engine import EngineConfig
    from ntt_engine.backbones.sam2_proposer import Sam2ProposalGenerator
    from ntt_engine.prompting import paper_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or EngineConfig().decoder_batch(args.device)
    proposer = Sam2ProposalGenerator(args.model, None, device=args.device, points_batch_size=batch,
                                     random_weights=True)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    embedding = proposer.embed(image)
    side = max(1, round(args.prompts ** 0.5))
    points = paper_grid(image.shape[:2], side)[:args.prompts]
    variants = {f"before (repeated image, batches of {args.before_batch})": (args.before_batch, False),
                f"repeated image, batches of {batch}": (batch, False),
                f"image work shared, batches of {batch}": (batch, True)}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    outputs = {}
    measure(proposer, embedding, points[:batch], batch, True)  # warm-up: allocator, kernels
    for _ in range(args.rounds):
        for name, (size, shared) in variants.items():
            row, outputs[name] = measure(proposer, embedding, points, size, shared)
            runs[name].append(row)
    first, *others = outputs.values()
    same = all(torch.equal(first.logits, o.logits) and torch.equal(first.quality, o.quality) for o in others)
    summary = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for name, rows in runs.items()}
    names = list(variants)
    ratio = summary[names[0]]["wall_s"] / summary[names[-1]]["wall_s"]
    result = {"model": args.model, "prompts": len(points), "batch": batch, "threads": torch.get_num_threads(),
              "device": args.device, "machine": f"{platform.machine()}, {platform.python_version()}",
              "median": summary, "runs": runs, "speedup_wall": round(ratio, 3), "bit_identical": same}
    for name, row in summary.items():
        print(f"{name:40} wall {row['wall_s']:7.2f} s  user {row['user_s']:7.2f} s  sys {row['sys_s']:6.2f} s  "
              f"minor faults {row['minor_faults']:>10,.0f}")
    print(f"speed-up {ratio:.3f}× ({len(points)} prompts, {result['threads']} threads, {args.model}); "
          f"outputs of every variant bit-identical: {same}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_decoder_{args.device.split(':')[0]}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
