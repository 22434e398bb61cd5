"""`ntt replay`: what the labelling loop would have saved, on data you already labelled.

    ntt replay instances.json --images images/ -o replay/ --preset fast
    ntt replay instances.json --order order.txt --loop online -o replay/

Replays the COCO file's images in order (the `images` list's, or --order: a text file of image ids or file names,
one per line), or a Label Studio JSON export's tasks in the order they were annotated (their masks, boxes and
polygons as `ntt export-ls` converts them; --images: the folder of the task images) with a simulated annotator (ntt_engine/simulation.py, the one the labelling-effort benchmark uses):
each image starts from the engine's prediction with the memory as it stands; the annotator keeps what matches its
ground truth, relabels, deletes the rest and draws what was missed; the finished annotation then grows the memory as
Label Studio's webhooks would (--loop: frozen, online, online+corrections, or the full loop with calibrated
thresholds, the default). Writes OUT/dashboard.json (the figures of the backend's /dashboard/<project>.json: edits,
per-class precision and recall of the pre-labels, the effort curve) and OUT/effort.png (the curve beside drawing every
object by hand). Images without annotations are replayed as images without objects.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ntt_cli.coco import annotation_mask, load_coco, resolve_images
from ntt_cli.console import CliError, command_parser, examples, log, plural, progress
from ntt_cli.engine_options import add_engine_options, build_engine, engine_config
from ntt_cli.files import write_json
from ntt_engine.simulation import REPLAY_LOOPS


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "replay", "what the labelling loop would have saved on labelled data", __doc__)
    p.add_argument("coco", type=Path, metavar="COCO.json", help="ground truth with masks (polygons or RLE), or a "
                   "Label Studio JSON export")
    p.add_argument("--images", type=Path, help="folder of the images (default: beside the json); for a Label Studio "
                   "export, the folder its local-files paths are relative to (LOCAL_FILES_DOCUMENT_ROOT)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="dashboard.json and effort.png")
    p.add_argument("--order", type=Path, metavar="FILE", help="image ids or file names, one per line")
    p.add_argument("--loop", default="online+corrections+calibrated", choices=REPLAY_LOOPS)
    p.add_argument("--first-k", type=int, default=3, help="references of --loop frozen (default 3)")
    p.add_argument("--threshold", type=float, default=0.5, help="score threshold (of uncalibrated classes)")
    p.add_argument("--match-iou", type=float, default=0.5, help="a prediction this close to an object is kept")
    p.add_argument("--limit", type=int, help="replay only the first N images")
    add_engine_options(p, default_preset="paper")
    p.set_defaults(func=run)


def ordered(images: list[dict], order_file: Path | None) -> list[dict]:
    if order_file is None:
        return list(images)
    try:
        wanted = [line.strip() for line in order_file.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise CliError(f"cannot read --order {order_file}: {exc}") from None
    by_key = {str(image["id"]): image for image in images} | {str(image["file_name"]): image for image in images}
    unknown = [w for w in wanted if w not in by_key]
    if unknown:
        raise CliError(f"--order {order_file}: {plural(len(unknown), 'line')} name no image of the COCO file "
                       f"({examples(unknown)}); use image ids or file names")
    return [by_key[w] for w in dict.fromkeys(wanted)]


def from_label_studio(export: Path, images_dir: Path | None, work: Path) -> tuple[Path, list[str]]:
    """A Label Studio JSON export as a COCO file (`ntt export-ls`), and its task ids in the order their annotations
    were made (created_at of the annotation each task is replayed with)."""
    import argparse

    from ntt_cli import export_ls

    coco = work / "label-studio-export.json"
    export_ls.run(argparse.Namespace(export=export, output=coco, categories=None, source="annotations",
                                     data_key=None, images=images_dir))
    chosen = [(task, export_ls.choose(task, "annotations")) for task in export_ls.read_tasks(export)]
    made = sorted((str(a.get("created_at") or ""), task.get("id")) for task, a in chosen if a is not None)
    return coco, [str(task_id) for _, task_id in made]


def _is_label_studio_export(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4096).lstrip()[:1] == b"["


def run(args) -> int:
    from ntt_engine.effort import drawn_effort
    from labelstudio_backend.predict.task_score import Thresholds
    from labelstudio_backend.report.chart import effort_png
    from labelstudio_backend.report.stats import project_stats
    from labelstudio_backend.store.projects import AnnotationRecord, ProjectState
    from ntt_engine.corrections import LabelledMask
    from ntt_engine.image_io import load_image
    from ntt_engine.simulation import AnnotatorSettings, Run, Sample, label_one, loop_named

    made_order: list[str] | None = None
    if _is_label_studio_export(args.coco):  # a Label Studio JSON export: its tasks in the order they were annotated
        with tempfile.TemporaryDirectory(prefix="ntt-replay-") as work:
            source, made_order = from_label_studio(args.coco, args.images, Path(work))
            coco = load_coco(source)  # read whole; its image_root is --images
    else:
        coco = load_coco(args.coco)
    images = ordered(coco.images, args.order)
    if made_order is not None and args.order is None:
        by_id = {str(image["id"]): image for image in images}
        images = [by_id[i] for i in made_order if i in by_id]
    images = images[:args.limit]
    found = resolve_images(coco, coco.image_root(args.images), skip_missing=False, images=images)
    if not found:
        raise CliError(f"{args.coco} lists no image to replay")
    names = coco.category_names
    engine = build_engine(engine_config(args, default_preset="paper"))
    settings = AnnotatorSettings(args.threshold, args.match_iou, sweep=())
    loop = Run(loop_named(args.loop, args.first_k), engine, engine.new_memory())
    state = ProjectState(0)
    history: list[Sample] = []
    for index, (image, path) in enumerate(progress(found, desc="replaying", unit="img")):
        pixels = load_image(path)
        height, width = pixels.shape[:2]
        truths = []
        for ann in coco.by_image.get(image["id"], []):
            mask = annotation_mask(ann, height, width)
            if mask is not None and mask.any():
                truths.append(LabelledMask(names.get(ann["category_id"], str(ann["category_id"])), mask.astype(bool)))
        sample = Sample(f"image-{image['id']}", pixels, truths)
        history.append(sample)
        predicted_from = len(loop.memory)  # an empty memory predicts nothing: the first images are drawn by hand
        label_one(loop, index, sample, settings, history)
        effort = loop.efforts[-1] if predicted_from else drawn_effort(truths)
        state.annotations[str(index + 1)] = AnnotationRecord(
            image["id"], "reference" if truths else "negative", sorted({t.label for t in truths}), len(truths),
            f"{index:08d}", effort=effort)
    calibrated = loop.loop.calibrated
    stats = project_stats(state, loop.memory, Thresholds(args.threshold, loop.thresholds if calibrated else {}),
                          "calibrated" if calibrated else "--threshold",
                          f"{engine.model_id}.r{loop.memory.revision} (replay, {args.loop})")
    stats.pop("gallery", None)  # no pictures offline
    stats["replay"] = {"coco": str(args.coco), "images": len(found), "loop": args.loop, "preset": engine.config.preset_name,
                       "threshold": args.threshold, "match_iou": args.match_iou, "seconds": round(loop.seconds, 1)}
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "dashboard.json", stats, indent=1)
    (args.output / "effort.png").write_bytes(effort_png(stats))
    totals = stats["totals"]
    log.info("replayed %s with %s: %d edits against %d drawing every object by hand (%d deleted, %d added, "
             "%d relabelled, %d redrawn); wrote %s and %s", plural(len(found), "image"), args.loop, totals["edits"],
             totals["hand_drawn_edits"], totals["deleted"], totals["added"], totals["relabelled"], totals["redrawn"],
             args.output / "dashboard.json", args.output / "effort.png")
    return 0
