"""`ntt predict`: COCO results (RLE masks, xywh boxes, scores, category ids) for a folder of images or a COCO json.

Each finished image is appended to `<output>.progress.jsonl`; rerunning the same command skips the images already
there, so an interrupted run resumes and the final file equals an uninterrupted run. `--ray ADDRESS` (or `--ray
local`) spreads the images over Ray actors with the same result. Beside the results, `<results>.meta.json` lists the
images and categories (what `ntt viz` reads).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from ntt_cli.coco import Coco, load_coco, resolve_images
from ntt_cli.console import CliError, command_parser, examples, log, plural, progress
from ntt_cli.engine_options import add_engine_options, build_engine, engine_config
from ntt_cli.files import list_image_dir, sidecar, write_json
from ntt_cli.inference import image_record
from ntt_cli.memory_build import read_meta

PROGRESS_SUFFIX = ".progress.jsonl"
META_SUFFIX = ".meta.json"


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "predict", "predict instance masks -> COCO results json (resumable, Ray)",
                       __doc__)
    p.add_argument("memory", type=Path, metavar="MEMORY.ntt")
    p.add_argument("input", type=Path, metavar="IMAGES_DIR_OR_COCO.json")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="RESULTS.json")
    p.add_argument("--score-thr", type=float, default=0.0, help="drop detections scoring at or below this")
    p.add_argument("--images", type=Path, metavar="DIR", help="image folder for a COCO json input")
    p.add_argument("--categories", type=Path, metavar="COCO.json",
                   help="take category ids from this file (default: the input json's, else the memory's)")
    p.add_argument("--skip-missing", action="store_true", help="warn about missing image files instead of failing")
    p.add_argument("--restart", action="store_true", help="ignore an existing progress file and start over")
    p.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster (host:port, 'auto') or 'local'")
    p.add_argument("--workers", type=int, help="Ray actors (default: one per GPU, else one per CPU slot)")
    add_engine_options(p, default_preset=None)
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------ inputs


def collect_images(args) -> tuple[list[dict[str, Any]], list[Path], Coco | None]:
    if not args.input.exists():
        raise CliError(f"{args.input} does not exist; pass a folder of images or a COCO json")
    if args.input.is_dir():
        if args.images is not None:
            log.warning("--images is ignored: the input is already a folder")
        files = list_image_dir(args.input)
        images = [{"id": i + 1, "file_name": f.relative_to(args.input).as_posix()} for i, f in enumerate(files)]
        return images, files, None
    coco = load_coco(args.input, "input file", need_categories=False)
    if not coco.images:
        raise CliError(f"{args.input} lists no images")
    pairs = resolve_images(coco, coco.image_root(args.images), args.skip_missing)
    if not pairs:
        raise CliError(f"none of the images of {args.input} was found")
    return [p[0] for p in pairs], [p[1] for p in pairs], coco


def category_ids(args, labels: list[str], coco: Coco | None, meta: dict | None) -> tuple[dict[str, int], list]:
    """Memory class name → category id, and the categories list for the metadata."""
    source, categories = None, None
    if args.categories is not None:
        source, categories = args.categories, load_coco(args.categories, "categories file").categories
    elif coco is not None and coco.categories:
        source, categories = args.input, coco.categories
    elif meta and meta.get("categories"):
        source, categories = "the memory's metadata", meta["categories"]
    if categories is None:
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(sorted(labels))]
        log.warning("no categories given: numbering the memory's classes 1..%d alphabetically (pass --categories "
                    "REFS.json to use the dataset's ids)", len(labels))
    by_name = {str(c.get("name")): c["id"] for c in categories}
    missing = [label for label in labels if label not in by_name]
    if missing:
        raise CliError(f"memory classes {missing} are not categories of {source} (it has {sorted(by_name)}); "
                       "pass --categories with a COCO json that names them")
    return {label: by_name[label] for label in labels}, [{"id": c["id"], "name": c.get("name")} for c in categories]


# ------------------------------------------------------------------------------------------------ progress file


class ProgressFile:
    """JSONL: a header with the run's fingerprint, then one record per finished image (any order)."""

    def __init__(self, path: Path, fingerprint: str, restart: bool):
        self.path = path
        self.records: dict[int, dict[str, Any]] = {}
        header = {"ntt_progress": 1, "fingerprint": fingerprint}
        lines = [] if restart or not path.exists() else path.read_text(errors="replace").splitlines()
        if lines:
            try:
                found = json.loads(lines[0]).get("fingerprint")
            except (json.JSONDecodeError, AttributeError):
                found = None
            if found != fingerprint and len(lines) > 1:
                raise CliError(f"{path} belongs to a different run (other memory, images, categories, engine config "
                               "or --score-thr); pass --restart to start over, or use another --output")
            for number, line in enumerate(lines[1:], 2):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s: line %d is incomplete (interrupted write); that image is predicted again",
                                path, number)
                    continue
                if "error" not in record:
                    self.records[record["index"]] = record
        # rewrite without torn or failed lines, then append
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(path.name + ".tmp")
        with open(temp, "w") as handle:
            handle.write(json.dumps(header) + "\n")
            for record in self.records.values():
                handle.write(json.dumps(record) + "\n")
        temp.replace(path)
        self.handle = open(path, "a")
        self.failed: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        if "error" in record:
            self.failed.append(record)
            log.warning("image %s: %s", record["image_id"], record["error"])
            return
        self.records[record["index"]] = record
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def fingerprint(memory_bytes: bytes, config, cat_ids: dict[str, int], images: list[dict], score_thr: float) -> str:
    digest = hashlib.sha256(memory_bytes)
    digest.update(json.dumps([config.config_id(), cat_ids, score_thr,
                              [[im["id"], im["file_name"]] for im in images]], sort_keys=True).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ command


def run(args) -> int:
    started = time.perf_counter()
    memory_bytes, memory = _read_memory(args)
    labels = sorted(memory.counts())
    meta = read_meta(args.memory)
    config = engine_config(args, fallback=(meta or {}).get("config"))
    images, files, coco = collect_images(args)
    cat_ids, categories = category_ids(args, labels, coco, meta)
    output = args.output
    if output.exists() and output.is_dir():
        raise CliError(f"--output {output} is a folder; give a file name such as {output / 'results.json'}")
    # load the models before touching the progress file: a bad config leaves nothing behind
    engine = None if args.ray else _engine_for(config, memory, args.memory)
    tracker = ProgressFile(sidecar_progress(output), fingerprint(memory_bytes, config, cat_ids, images, args.score_thr),
                           args.restart)
    todo = [(i, image["id"], file) for i, (image, file) in enumerate(zip(images, files)) if i not in tracker.records]
    if tracker.records:
        log.info("resuming: %s of %s already done in %s", plural(len(tracker.records), "image"), len(images),
                 tracker.path)
    bar = progress(total=len(images), initial=len(tracker.records), desc="predict", unit="img")

    def on_record(record: dict[str, Any]) -> None:
        tracker.add(record)
        bar.update(1)

    try:
        if engine is None:
            model_id = _ray(args, config, memory_bytes, cat_ids, todo, on_record)
        else:
            model_id = engine.model_id
            for index, image_id, file in todo:
                on_record(image_record(engine, file, index, image_id, cat_ids, args.score_thr))
    except KeyboardInterrupt:
        raise CliError(f"interrupted after {plural(len(tracker.records), 'image')}; rerun the same command to "
                       "resume", 130) from None
    finally:
        bar.close()
        tracker.close()
    done = sorted(tracker.records.values(), key=_order)
    results = [r for record in done for r in record["results"]]
    write_json(output, results)
    write_json(sidecar(output, META_SUFFIX), {
        "format": "ntt-results-meta", "version": 1, "memory": str(args.memory), "model_id": model_id,
        "score_threshold": args.score_thr, "image_root": str(_root(args, coco).resolve()), "categories": categories,
        "images": [{"id": r["image_id"], "file_name": images[r["index"]]["file_name"], "width": r["width"],
                    "height": r["height"]} for r in done],
        "failed": [{"id": f["image_id"], "error": f["error"]} for f in tracker.failed]}, indent=1)
    if tracker.failed:
        log.warning("%s could not be read and %s left out of %s (rerun to retry them): %s",
                    plural(len(tracker.failed), "image"), "is" if len(tracker.failed) == 1 else "are", output,
                    examples([f["image_id"] for f in tracker.failed]))
    else:
        tracker.path.unlink(missing_ok=True)
    log.info("predicted %s: %s -> %s (%.1f s, %s)", plural(len(done), "image"), plural(len(results), "detection"),
             output, time.perf_counter() - started, f"ray {args.ray}" if args.ray else "in-process")
    return 0


def _read_memory(args) -> tuple[bytes, Any]:
    """The memory file's bytes and its MemoryBank, after the arguments' own checks."""
    from ntt_engine import MemoryBank, MemoryFormatError

    if not args.memory.is_file():
        raise CliError(f"memory file {args.memory} does not exist; build one with `ntt memory build`")
    if not args.input.exists():
        raise CliError(f"{args.input} does not exist; pass a folder of images or a COCO json")
    if args.workers is not None and not args.ray:
        raise CliError("--workers needs --ray ADDRESS (or --ray local)")
    memory_bytes = args.memory.read_bytes()
    try:
        memory = MemoryBank.from_bytes(memory_bytes, str(args.memory))
    except MemoryFormatError as exc:
        raise CliError(str(exc)) from None
    if not memory.counts():
        raise CliError(f"memory {args.memory} holds no class; rebuild it with `ntt memory build`")
    return memory_bytes, memory


def _engine_for(config, memory, memory_path: Path):
    from ntt_engine import MemoryFormatError

    engine = build_engine(config)
    try:
        engine.memory = engine.adopt_memory(memory)
    except MemoryFormatError as exc:
        raise CliError(f"{exc} (or predict with the preset it was built with, see "
                       f"{sidecar(memory_path, META_SUFFIX)})") from None
    return engine


def _order(record: dict[str, Any]) -> tuple:
    """Results are sorted by image id (input order when ids are not numbers), then the engine's detection order."""
    image_id = record["image_id"]
    return (0, image_id, record["index"]) if isinstance(image_id, int) else (1, record["index"], 0)


def _root(args, coco: Coco | None) -> Path:
    return args.input if coco is None else coco.image_root(args.images)


def sidecar_progress(output: Path) -> Path:
    return output.with_name(output.name + PROGRESS_SUFFIX)


def _ray(args, config, memory_bytes, cat_ids, todo, on_record) -> str:
    from ntt_cli.ray_runner import run_ray

    if args.workers is not None and args.workers < 1:
        raise CliError("--workers must be at least 1")
    logging.getLogger("ray").setLevel(logging.WARNING)
    return run_ray(args.ray, args.workers, config.to_dict(), memory_bytes, cat_ids, args.score_thr, todo, on_record)
