"""Stage-by-stage cost of one image for the `paper` and `fast` presets, measured in one run on this machine.

    python benchmarks/bench_pipeline.py                 # both presets, 480x640 image, writes benchmarks/out/
    python benchmarks/bench_pipeline.py --presets fast  # one preset

Real architectures with random weights (pretrained files cannot be fetched here; cost does not depend on the
values, except that random SAM2 passes every prompt through the IoU gate — a worst case for the stages after the
decoder). Each preset runs in its own subprocess so its peak RSS is its own. Prints the issue-6 ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_predict(engine, target, memory) -> float:
    """The fastest of 3 predictions of a cached image against `memory` (the prototype cache warmed first)."""
    engine.predict(target, memory=memory)
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        engine.predict(target, memory=memory)
        runs.append(time.perf_counter() - started)
    return min(runs)


def big_memory(engine, labels: list[str], references: int):
    """A memory of `references` random references, one entry per label each."""
    import numpy as np
    from ntt_engine.memory import MemoryEntry

    big = engine.new_memory()
    rng = np.random.default_rng(0)
    dim = engine.memory.dim
    for i in range(references):
        big.set_reference(f"r{i}", [MemoryEntry(label, rng.standard_normal(dim).astype(np.float32))
                                    for label in labels])
    return big


def reference_costs(engine, other: tuple, target: tuple) -> tuple[float, float, float, int]:
    """DINOv2's forward alone on a new image; adding a reference on that new image; adding one on the cached target
    (no forward expected: how many ran is returned too)."""
    image, labels, masks = other
    started = time.perf_counter()
    engine.encoder.encode(image)
    forward = time.perf_counter() - started
    started = time.perf_counter()
    engine.add_reference("other", image, labels, masks)
    new_image = time.perf_counter() - started
    engine.stage_times.reset()
    image, labels, masks = target
    started = time.perf_counter()
    engine.add_reference("target-as-ref", image, labels[:1], masks[:1])
    cached = time.perf_counter() - started
    forwards = engine.stage_times.calls.get("dinov2", 0)
    engine.remove_reference("target-as-ref")
    return forward, new_image, cached, forwards


def measure_preset(preset: str, threads: int, size: tuple[int, int], device: str = "auto") -> dict:
    import torch
    from generated_samples import generated_samples
    from ntt_engine import Engine, EngineConfig
    from ntt_engine.export import mask_to_rle

    torch.set_num_threads(threads)
    samples = generated_samples("ntt-bench-", images=3, classes=3, seed=1, size=size, negative_fraction=0.0)
    (ref_image, ref_labels, ref_masks), (target, target_labels, target_masks), (other, other_labels, other_masks) = \
        samples

    engine = Engine(EngineConfig.preset(preset, random_weights=True, device=device))
    on_gpu = torch.cuda.is_available() and device != "cpu"
    if on_gpu:  # a stage's time includes the GPU work it queued
        engine.stage_times.synchronize = torch.cuda.synchronize
    started = time.perf_counter()
    engine.add_reference("ref", ref_image, ref_labels, ref_masks)
    add_reference_cold = time.perf_counter() - started

    engine.stage_times.reset()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    instances = engine.predict(target)
    with engine.stage_times.measure("output_rle"):
        encoded = [mask_to_rle(inst.mask) for inst in instances]
    cold = time.perf_counter() - started
    stages = engine.stage_times.snapshot()
    peak_gpu = torch.cuda.max_memory_allocated() / 2 ** 20 if on_gpu else None
    prompts = engine.analyse(target).prompts_used

    dinov2_forward, add_reference_new, add_reference_cached, forwards_for_cached_reference = \
        reference_costs(engine, (other, other_labels, other_masks), (target, target_labels, target_masks))

    # re-predict the cached target after the memory changed
    started = time.perf_counter()
    engine.predict(target)
    repredict = time.perf_counter() - started

    # matching with 1,000 references per class vs the small memory
    labels = sorted(set(ref_labels) | set(other_labels))
    matching_small = timed_predict(engine, target, engine.memory)
    matching_big = timed_predict(engine, target, big_memory(engine, labels, references=1000))

    encoders = stages.get("sam2_encoder", 0) + stages.get("dinov2", 0)
    decoder = stages.get("decoder", 0)
    return {
        "preset": preset, "image": f"{size[0]}x{size[1]}", "threads": threads, "prompts": prompts,
        "instances": len(encoded), "stages_s": stages, "cold_predict_s": cold,
        "decoder_per_prompt_ms": 1000 * decoder / max(prompts, 1),
        "ratio_total_over_encoders_plus_decoder": cold / (encoders + decoder),
        "ratio_total_over_encoders": cold / encoders,
        "repredict_after_memory_change_s": repredict, "ratio_repredict_over_cold": repredict / cold,
        "add_reference_first_s": add_reference_cold, "add_reference_new_image_s": add_reference_new,
        "dinov2_forward_s": dinov2_forward, "add_reference_cached_image_s": add_reference_cached,
        "dinov2_forwards_for_cached_reference": forwards_for_cached_reference,
        "matching_1000_refs_per_class_added_ms": 1000 * (matching_big - matching_small),
        "peak_rss_mib": peak_rss_mib(), "peak_gpu_mib_cold_predict": peak_gpu,
        "device": str(engine.config.device if not on_gpu else torch.cuda.get_device_name()),
        "decoder_batch": engine.proposer.points_batch_size,
    }


def memory_file_size() -> int:
    import numpy as np

    from ntt_engine.memory import MemoryBank, MemoryEntry
    bank, rng = MemoryBank("dinov2_vitl14"), np.random.default_rng(0)
    for shot in range(30):
        bank.set_reference(f"shot{shot}", [MemoryEntry(f"class{c}", rng.standard_normal(1024).astype(np.float32))
                                           for c in range(80)])
    with tempfile.TemporaryDirectory() as tmp:
        bank.save(Path(tmp) / "m.ntt")
        return (Path(tmp) / "m.ntt").stat().st_size


def chart(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    stages = sorted({s for r in results for s in r["stages_s"]}, key=lambda s: -max(r["stages_s"].get(s, 0)
                                                                                    for r in results))
    colours = {stage: plt.cm.tab10(i % 10) for i, stage in enumerate(stages)}  # one colour per stage, all rows
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.9 * len(results)))
    for row, result in enumerate(results):
        left = 0.0
        for stage in stages:
            width = result["stages_s"].get(stage, 0.0)
            ax.barh(row, width, left=left, color=colours[stage], label=stage if row == 0 else None)
            left += width
    ax.set_yticks(range(len(results)), [f"{r['preset']} ({r['prompts']} prompts)" for r in results])
    ax.set_xlabel("seconds per image (cold)")
    where = results[0].get("device") if results[0].get("peak_gpu_mib_cold_predict") is not None else \
        f"{results[0]['threads']} CPU threads"
    ax.set_title(f"ntt stage costs, {results[0]['image']} image, {where}")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper", "fast"])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--size", default="640x480", help="image WIDTHxHEIGHT")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    if args.worker:
        print(json.dumps(measure_preset(args.worker, args.threads, (width, height), args.device)))
        return 0
    results = []
    for preset in args.presets:
        print(f"[bench] {preset} ...", flush=True)
        run = subprocess.run([sys.executable, __file__, "--worker", preset, "--threads", str(args.threads),
                              "--size", args.size, "--device", args.device], capture_output=True, text=True,
                             check=True)
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"{args.threads} torch threads, {platform.python_version()}",
              "memory_file_30shot_80class_bytes": memory_file_size(), "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_pipeline.json").write_text(json.dumps(report, indent=2))
    chart(results, args.out / "bench_pipeline.png")
    print(f"\nmachine: {report['machine']}")
    for r in results:
        print(f"\n== {r['preset']} ({r['image']}, {r['prompts']} prompts, {r['instances']} instances) ==")
        for stage, seconds in sorted(r["stages_s"].items(), key=lambda kv: -kv[1]):
            print(f"  {stage:<14} {seconds:8.3f} s")
        print(f"  cold predict   {r['cold_predict_s']:8.3f} s   decoder {r['decoder_per_prompt_ms']:.1f} ms/prompt")
        print(f"  total / (encoders + decoder)       {r['ratio_total_over_encoders_plus_decoder']:.3f}")
        print(f"  total / (SAM2 encoder + DINOv2)    {r['ratio_total_over_encoders']:.3f}")
        print(f"  re-predict after memory change     {100 * r['ratio_repredict_over_cold']:.2f} % of cold")
        print(f"  add reference (new image)          {r['add_reference_new_image_s']:.3f} s "
              f"(DINOv2 forward {r['dinov2_forward_s']:.3f} s)")
        print(f"  add reference (cached image)       {r['add_reference_cached_image_s'] * 1000:.1f} ms, "
              f"{r['dinov2_forwards_for_cached_reference']} DINOv2 forward(s)")
        print(f"  1,000 refs/class add to matching   {r['matching_1000_refs_per_class_added_ms']:.1f} ms")
        print(f"  peak RSS                           {r['peak_rss_mib']:.0f} MiB")
        if r["peak_gpu_mib_cold_predict"] is not None:
            print(f"  peak GPU memory (cold predict)     {r['peak_gpu_mib_cold_predict']:.0f} MiB "
                  f"({r['device']}, decoder batches of {r['decoder_batch']})")
    print(f"\nmemory file, 30-shot x 80 classes x 1024-d: {report['memory_file_30shot_80class_bytes'] / 2**20:.2f} MiB")
    print(f"wrote {args.out / 'bench_pipeline.json'} and {args.out / 'bench_pipeline.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
