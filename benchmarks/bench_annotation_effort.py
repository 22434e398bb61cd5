"""Labelling effort: how many edits a simulated annotator makes per image, with and without the feedback loop.

    python benchmarks/bench_annotation_effort.py                   # shipped test backbones, hard synthetic set
    python benchmarks/bench_annotation_effort.py --preset fast     # real DINOv2 + SAM2 (cached checkpoints)

The annotator (ntt_engine/simulation.py, which `ntt replay` uses too) labels a generated `--difficulty hard` set image
by image in a fixed order. For each image the engine predicts with the current memory; the annotator keeps
predictions that match ground truth (same class, mask IoU ≥ 0.5), relabels a prediction that matches an object of
another class, deletes the other predictions and draws the objects nothing found. Edits = deletions + additions +
relabels (`CorrectionDiff.edits`). The finished annotation (the ground truth) is what Label Studio would send back.
Configurations, all measured in one run:

- frozen: only the first `--first-k` annotated images are references (the first human-labelled tasks);
- online: every finished annotation becomes a reference;
- online + corrections: and the predictions the annotator deleted or relabelled become negative examples;
- online + corrections + calibrated: and per-class thresholds are re-calibrated after each image by leave-one-out
  on the last `--calibration-window` labelled images (instead of one global `--threshold`).

Prints total edits, edits per image over the last half and the ratios to `frozen`; writes a PNG of cumulative
edits against images labelled and a JSON with every per-image count (default: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ntt_engine.simulation import CONFIGS, AnnotatorSettings, Run, Sample, label_one  # noqa: E402,F401
from ntt_engine.simulation import build_runs as _build_runs  # noqa: E402


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


def build_runs(preset: str, threads: int) -> list[Run]:
    from ntt_engine import EngineConfig

    return _build_runs(EngineConfig.preset(preset, num_threads=threads))


def summarise(runs: list[Run], samples: list[Sample]) -> dict:
    half = len(samples) // 2
    objects = [len(s.truths) for s in samples]
    base = runs[0]
    ratio = lambda value, reference: None if reference == 0 else value / reference  # noqa: E731
    result = {"images": len(samples), "objects": sum(objects), "objects_per_image": objects, "configs": {}}
    for run in runs:
        total, late = sum(run.edits), sum(run.edits[half:]) / max(1, len(samples) - half)
        result["configs"][run.name] = {
            "total_edits": total, "edits_per_image_last_half": late, "per_image": run.edits, **run.kinds,
            "ratio_total_to_frozen": ratio(total, sum(base.edits)),
            "ratio_last_half_to_frozen": ratio(late, sum(base.edits[half:]) / max(1, len(samples) - half)),
            "seconds": round(run.seconds, 1),
            "final_thresholds": {k: round(v, 3) for k, v in run.thresholds.items()},
        }
    return result


def plot(result: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    x = np.arange(1, result["images"] + 1)
    ax.plot(x, np.cumsum(result["objects_per_image"]), color="0.6", linestyle="--", label="no model (draw everything)")
    for name, data in result["configs"].items():
        ax.plot(x, np.cumsum(data["per_image"]), linewidth=2, label=f"{name} ({data['total_edits']})")
    ax.set_xlabel("images labelled")
    ax.set_ylabel("cumulative edits (delete + add + relabel)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="synthetic", choices=("synthetic", "fast", "paper"))
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", default="hard", choices=("hard", "easy"), help="generated set (default hard)")
    parser.add_argument("--data", type=Path, help="an existing COCO folder (instances.json + images); default: "
                                                  "generate a synthetic set in a temporary folder")
    parser.add_argument("--first-k", type=int, default=3, help="references of the frozen configuration")
    parser.add_argument("--threshold", type=float, default=0.5, help="global score threshold (uncalibrated)")
    parser.add_argument("--match-iou", type=float, default=0.5)
    parser.add_argument("--calibration-window", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--png", type=Path, help="chart path (default OUT/annotation_effort_PRESET.png)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from ntt_engine.checkpoints import CheckpointError
    from ntt_engine.synthetic import generate_dataset

    try:
        runs = build_runs(args.preset, args.threads)
    except CheckpointError as exc:
        print(f"cannot build the {args.preset!r} engine: {exc}", file=sys.stderr)
        return 2
    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="ntt-effort-"))
        generate_dataset(data, args.images, args.classes, args.seed, difficulty=args.difficulty)
    samples, labels = load_samples(data)
    settings = AnnotatorSettings(args.threshold, args.match_iou, args.first_k, args.calibration_window)
    history: list[Sample] = []
    for index, sample in enumerate(tqdm(samples, desc="annotating", unit="img")):
        history.append(sample)
        for run in runs:
            label_one(run, index, sample, settings, history)

    result = summarise(runs, samples)
    result["settings"] = {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                          "data": str(data), "classes_seen": labels, "model_id": runs[0].engine.model_id,
                          "machine": platform.platform()}
    print(f"\n{len(samples)} images, {result['objects']} objects, preset {args.preset}, first-k {args.first_k}")
    print(f"{'configuration':32} {'edits':>6} {'last-half/img':>13} {'x frozen':>9} {'x frozen (last half)':>21}"
          f" {'del':>5} {'add':>5} {'relab':>5}")
    shown = lambda value, width: f"{'n/a':>{width}}" if value is None else f"{value:{width}.2f}"  # noqa: E731
    for name, c in result["configs"].items():
        print(f"{name:32} {c['total_edits']:6d} {c['edits_per_image_last_half']:13.2f} "
              f"{shown(c['ratio_total_to_frozen'], 9)} {shown(c['ratio_last_half_to_frozen'], 21)} "
              f"{c['deleted']:5d} {c['added']:5d} {c['relabelled']:5d}")
    print(f"drawing every object by hand: {result['objects']} edits")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"annotation_effort_{args.preset}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    png = args.png or args.out / f"{stem}.png"
    what = f"{args.difficulty} synthetic" if args.data is None else str(args.data.name)
    plot(result, png, f"Labelling effort, {len(samples)} {what} images, preset {args.preset}")
    print(f"wrote {args.out / f'{stem}.json'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
