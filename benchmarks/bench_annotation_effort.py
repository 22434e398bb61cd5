"""Labelling effort: how many edits a simulated annotator makes, per configuration of the feedback loop, over several
seeds and across how separable the look-alikes are.

    python benchmarks/bench_annotation_effort.py                      # test backbones, hard sets, 5 seeds × 4 shifts
    python benchmarks/bench_annotation_effort.py --shifts 8 --seeds 0 # one set
    python benchmarks/bench_annotation_effort.py --preset fast        # real DINOv2 + SAM2 (cached checkpoints)
    python benchmarks/bench_annotation_effort.py --data DIR           # your COCO folder, in its order

The annotator (ntt_engine/simulation.py, which `ntt replay` uses too) labels a generated `--difficulty hard` set image
by image. Each image starts from the engine's prediction with the current memory; the annotator keeps predictions
that match ground truth (same class, mask IoU ≥ 0.5), redraws a kept mask below IoU 0.9, relabels a prediction that
matches an object of another class, deletes the other predictions and draws what nothing found. Edits = deletions +
additions + relabels + redrawn masks, counted by ntt_engine/effort.py as the backend's dashboard counts them.
The stream starts with the images (up to 3, earliest first) that together show every class, so every frozen memory
knows every class. Configurations, all in one run on the same images:

- frozen-3, frozen-10: only the first 3 (10) images become references;
- online: every finished annotation becomes a reference, one global threshold (`--threshold`);
- online+calibrated: and per-class thresholds by leave-one-out on the last 20 labelled images, no negatives;
- online+corrections: references and the predictions the annotator deleted or relabelled as negatives;
- online+corrections+calibrated: the full loop;
- online, tuned threshold: the online memory at the one global threshold that made the fewest edits on the
  `--tuning-seeds`, which are not evaluated (a tuned baseline that saw none of the evaluated images).

Each generated set is drawn with look-alikes `--shifts` degrees off their class's hue (0: the class's exact hue, told
apart by texture only). The synthetic preset uses the texture-aware test encoder (`test_colour_texture_v2`).
Prints, per shift, each configuration's mean and range of total edits over the seeds, the redrawn masks and the CPU
seconds; writes a JSON with every per-image count and a PNG (mean lines, range bands) to `--out`.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ntt_engine.simulation import CONFIGS, LOOPS, AnnotatorSettings, Run, Sample, label_one  # noqa: E402,F401

TUNED = "online, tuned threshold"


def load_samples(data: Path) -> tuple[list[Sample], list[str]]:
    from pycocotools.coco import COCO

    from ntt_engine.corrections import LabelledMask
    from ntt_engine.image_io import load_image

    coco = COCO(str(data / "instances.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    samples = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        truths = [LabelledMask(names[a["category_id"]], coco.annToMask(a).astype(bool)) for a in anns]
        samples.append(Sample(f"img-{image_id}", load_image(data / "images" / info["file_name"]), truths))
    return samples, sorted(names.values())


def parse_setting(text: str) -> tuple[str, object]:
    """KEY=VALUE with a JSON value (a bare word is a string) and KEY an EngineConfig field."""
    import dataclasses

    from ntt_engine import EngineConfig

    key, sep, value = text.partition("=")
    if not sep or key not in {f.name for f in dataclasses.fields(EngineConfig)}:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE with KEY a field of EngineConfig")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def engine_config(preset: str, threads: int, encoder: str | None, overrides: dict | None = None):
    from ntt_engine import EngineConfig

    overrides = {**(overrides or {}), **({"encoder": encoder} if encoder else {})}
    if preset == "synthetic" and encoder is None:
        overrides["encoder"] = "test_colour_texture_v2"
    return EngineConfig.preset(preset, num_threads=threads, **overrides)


def run_stream(job: dict) -> dict:
    """One labelled stream (a generated seed and shift, or --data) through the named loops: per-loop counts."""
    import contextlib
    import io

    from ntt_engine.simulation import build_runs, cover_classes_first
    from ntt_engine.synthetic import generate_dataset

    with tempfile.TemporaryDirectory(prefix="ntt-effort-") as scratch:
        data = Path(job["data"]) if job.get("data") else Path(scratch)
        if not job.get("data"):
            generate_dataset(data, job["images"], job["classes"], job["seed"], difficulty="hard",
                             look_alike_shift=job["shift"])
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' chatter
            samples, labels = load_samples(data)
    if job["reorder"]:
        samples = cover_classes_first(samples, 3)
    loops = [loop for loop in LOOPS if loop.name in job["loops"]]
    runs = build_runs(engine_config(job["preset"], job["threads"], job["encoder"], job.get("overrides")), loops)
    settings = AnnotatorSettings(job["threshold"], job["match_iou"])
    history: list[Sample] = []
    for index, sample in enumerate(samples):
        history.append(sample)
        for run in runs:
            label_one(run, index, sample, settings, history)
    configs = {}
    for run in runs:
        configs[run.name] = {"total_edits": sum(run.edits), "per_image": run.edits, **run.kinds,
                             "seconds": round(run.seconds, 1),
                             "final_thresholds": {k: round(v, 3) for k, v in run.thresholds.items()},
                             "sweep": {str(t): sum(v) for t, v in run.sweep.items()},
                             "sweep_per_image": {str(t): v for t, v in run.sweep.items()}}
    return {"seed": job.get("seed"), "shift": job.get("shift"), "images": len(samples), "labels": labels,
            "order": [s.key for s in samples], "objects_per_image": [len(s.truths) for s in samples],
            "objects": sum(len(s.truths) for s in samples), "model_id": runs[0].engine.model_id,
            "backbones": f"{runs[0].engine.encoder.name} + {runs[0].engine.proposer.name}", "configs": configs}


def add_tuned(stream: dict, threshold: float) -> None:
    online = stream["configs"]["online"]
    per_image = online["sweep_per_image"][str(threshold)]
    stream["configs"][TUNED] = {"total_edits": sum(per_image), "per_image": per_image, "threshold": threshold,
                                "seconds": online["seconds"]}


def spread(values: list[float]) -> dict:
    return {"mean": round(sum(values) / len(values), 2), "min": min(values), "max": max(values)}


def summarise(streams: list[dict]) -> dict:
    names = list(streams[0]["configs"])
    half = streams[0]["images"] // 2
    out = {}
    for name in names:
        rows = [s["configs"][name] for s in streams]
        out[name] = {"total_edits": spread([r["total_edits"] for r in rows]),
                     "edits_per_image_last_half": spread([round(sum(r["per_image"][half:]) / max(1, s["images"] - half),
                                                                3) for r, s in zip(rows, streams)]),
                     "seconds": spread([r["seconds"] for r in rows])}
        if all("redrawn" in r for r in rows):  # the tuned row is counted from the online run's threshold sweep
            out[name]["redrawn"] = spread([r["redrawn"] for r in rows])
    out["draw everything by hand"] = {"total_edits": spread([s["objects"] for s in streams])}
    return out


def plot(result: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shifts = list(result["shifts"])
    panels = len(shifts) + (1 if len(shifts) > 1 else 0)
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), dpi=100, squeeze=False)
    names = list(result["shifts"][shifts[0]]["summary"])
    colours = {name: plt.cm.tab10(i) for i, name in enumerate(names)}
    for ax, shift in zip(axes.flat, shifts):
        block = result["shifts"][shift]
        streams = block["streams"]
        x = np.arange(1, streams[0]["images"] + 1)
        hand = np.array([np.cumsum(s["objects_per_image"]) for s in streams])
        ax.plot(x, hand.mean(0), color="0.6", linestyle="--", label="draw everything by hand")
        for name in names[:-1]:
            curves = np.array([np.cumsum(s["configs"][name]["per_image"]) for s in streams])
            ax.plot(x, curves.mean(0), color=colours[name], linewidth=1.8,
                    label=f"{name} ({block['summary'][name]['total_edits']['mean']:.0f})")
            ax.fill_between(x, curves.min(0), curves.max(0), color=colours[name], alpha=0.15, linewidth=0)
        label = f"look-alikes {shift}° off" if shift != "data" else "your data"
        ax.set_title(f"{label}, {len(streams)} seed(s)", fontsize=9)
        ax.set_xlabel("images labelled", fontsize=8)
        ax.set_ylabel("cumulative edits", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left")
    if len(shifts) > 1:
        ax = axes.flat[len(shifts)]
        xs = [float(s) for s in shifts]
        for name in names:
            rows_ = [result["shifts"][s]["summary"][name]["total_edits"] for s in shifts]
            colour = "0.6" if name == names[-1] else colours[name]
            ax.plot(xs, [r["mean"] for r in rows_], marker="o", color=colour, label=name,
                    linestyle="--" if name == names[-1] else "-")
            ax.fill_between(xs, [r["min"] for r in rows_], [r["max"] for r in rows_], color=colour, alpha=0.12,
                            linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel("look-alikes' hue shift from their class (degrees)", fontsize=8)
        ax.set_ylabel("total edits (mean, range over seeds)", fontsize=8)
        ax.set_title("separability sweep", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def numbers(text: str, kind=int) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="synthetic", choices=("synthetic", "fast", "paper"))
    parser.add_argument("--encoder", help="override the preset's encoder (synthetic default: test_colour_texture_v2)")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--seeds", type=lambda t: numbers(t), default=[0, 1, 2, 3, 4], help="evaluated (0,1,2,3,4)")
    parser.add_argument("--tuning-seeds", type=lambda t: numbers(t), default=[100, 101, 102],
                        help="seeds the tuned threshold is chosen on, never evaluated (100,101,102; '': no tuned row)")
    parser.add_argument("--configs", type=lambda t: [v for v in t.split(",") if v], default=list(CONFIGS),
                        help="which configurations (default all: " + ",".join(CONFIGS) + ")")
    parser.add_argument("--shifts", type=lambda t: numbers(t, float), default=[0.0, 2.0, 4.0, 8.0],
                        help="look-alike hue shifts in degrees (0,2,4,8)")
    parser.add_argument("--data", type=Path, help="an existing COCO folder (instances.json + images) instead of "
                                                  "generated sets; no tuned threshold (nothing held out)")
    parser.add_argument("--keep-order", action="store_true", help="label in the images' order (no classes first)")
    parser.add_argument("--threshold", type=float, default=0.5, help="global score threshold (uncalibrated)")
    parser.add_argument("--match-iou", type=float, default=0.5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="an engine setting for every configuration (EngineConfig field, JSON value), e.g. "
                             "--set correction_temperature=0.1; repeatable")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--workers", type=int, default=1, help="streams run at once (processes)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--png", type=Path, help="chart path (default OUT/annotation_effort_PRESET.png)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from ntt_engine.checkpoints import CheckpointError

    try:
        overrides = dict(parse_setting(text) for text in args.overrides)
    except ValueError as exc:
        parser.error(str(exc))
    unknown = [name for name in args.configs if name not in CONFIGS]
    if unknown or not args.configs:
        parser.error(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    tuning_seeds = args.tuning_seeds if "online" in args.configs else []
    base = {"overrides": overrides, "images": args.images, "classes": args.classes, "preset": args.preset,
            "encoder": args.encoder, "threads": args.threads, "threshold": args.threshold, "match_iou": args.match_iou,
            "reorder": not args.keep_order}
    shifts = ["data"] if args.data else [f"{s:g}" for s in args.shifts]
    jobs = []
    for shift in shifts:
        if args.data:
            jobs.append({**base, "data": str(args.data), "loops": args.configs, "role": "eval", "key": shift})
            continue
        jobs += [{**base, "seed": seed, "shift": float(shift), "loops": args.configs, "role": "eval", "key": shift}
                 for seed in args.seeds]
        jobs += [{**base, "seed": seed, "shift": float(shift), "loops": ("online",), "role": "tune", "key": shift}
                 for seed in tuning_seeds]
    try:
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
                done = list(tqdm(pool.map(run_stream, jobs), total=len(jobs), desc="streams", unit="stream"))
        else:
            done = [run_stream(job) for job in tqdm(jobs, desc="streams", unit="stream")]
    except CheckpointError as exc:
        print(f"cannot build the {args.preset!r} engine: {exc}", file=sys.stderr)
        return 2

    result = {"shifts": {}, "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                         "machine": platform.platform()}}
    for shift in shifts:
        evaluated = [d for d, j in zip(done, jobs) if j["key"] == shift and j["role"] == "eval"]
        tuning = [d for d, j in zip(done, jobs) if j["key"] == shift and j["role"] == "tune"]
        block: dict = {"streams": evaluated}
        if tuning:
            totals = {t: sum(s["configs"]["online"]["sweep"][t] for s in tuning) / len(tuning)
                      for t in tuning[0]["configs"]["online"]["sweep"]}
            best = min(totals, key=lambda t: (totals[t], float(t)))
            block["tuned_threshold"] = float(best)
            block["tuning_mean_edits"] = {t: round(v, 1) for t, v in totals.items()}
            for stream in evaluated:
                add_tuned(stream, best)
        block["summary"] = summarise(evaluated)
        for stream in evaluated:  # the sweep's totals stay; its per-image counts were for the tuned row
            for config in stream["configs"].values():
                config.pop("sweep_per_image", None)
        result["shifts"][shift] = block
    result["model_id"], backbones = done[0]["model_id"], done[0]["backbones"]
    result["backbones"] = backbones

    for shift, block in result["shifts"].items():
        streams = block["streams"]
        head = f"look-alikes {shift}° off their class's hue" if shift != "data" else str(args.data)
        tuned = f", tuned threshold {block['tuned_threshold']:.3f} (on seeds {args.tuning_seeds})" \
            if "tuned_threshold" in block else ""
        print(f"\n{head}: {len(streams)} stream(s) of {streams[0]['images']} images{tuned}")
        print(f"  {'configuration':34} {'edits mean':>10} {'range':>11} {'redrawn':>8} {'cpu s':>7}")
        for name, row in block["summary"].items():
            e = row["total_edits"]
            redrawn = f"{row['redrawn']['mean']:8.1f}" if "redrawn" in row else f"{'':8}"
            seconds = f"{row['seconds']['mean']:7.1f}" if "seconds" in row else f"{'':7}"
            print(f"  {name:34} {e['mean']:10.1f} {e['min']:5}–{e['max']:<5} {redrawn} {seconds}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"annotation_effort_{args.preset}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    png = args.png or args.out / f"{stem}.png"
    what = "hard synthetic sets" if args.data is None else args.data.name
    plot(result, png, f"Labelling effort, {args.images} images × {len(args.seeds)} seeds of {what}; {backbones}"
         if args.data is None else f"Labelling effort on {what}; {backbones}")
    print(f"wrote {args.out / f'{stem}.json'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
