"""Shared helpers of the `ntt` commands: errors, logging, progress bars, JSON files, engine config, COCO inputs."""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

log = logging.getLogger("ntt")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
QUIET = False  # set by main(): no progress bars


class CliError(Exception):
    """A problem with the user's input: printed as one clear message, exit status `code`, never a traceback."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------------------ output


def setup_logging(verbose: int, quiet: bool):
    """Our own stderr handler on the "ntt" and "ntt_engine" loggers (the root logger is left alone). Returns a
    function that puts the loggers back as they were (main() calls it, so in-process use leaves no trace)."""
    global QUIET
    QUIET = quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ntt: %(message)s" if verbose == 0 else
                                           "%(asctime)s %(name)s %(levelname)s: %(message)s"))
    # the engine logs every reference at INFO; that is noise under a progress bar
    levels = {"ntt": logging.WARNING if quiet else logging.DEBUG if verbose > 0 else logging.INFO,
              "ntt_engine": logging.DEBUG if verbose > 1 else logging.WARNING}
    saved = []
    for name, level in levels.items():
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False

    def restore() -> None:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate

    return restore


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "img",
             initial: int = 0):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, disable=QUIET,
                dynamic_ncols=True, mininterval=0.5, leave=True)


def plural(count: int, word: str) -> str:
    if count == 1:
        return f"{count} {word}"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{count} {word[:-1]}ies"
    return f"{count} {word}es" if word.endswith(("s", "x", "ch")) else f"{count} {word}s"


def examples(items: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(x) for x in list(items)[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


# ------------------------------------------------------------------------------------------------ files


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.exists():
        raise CliError(f"{what} {path} does not exist")
    if path.is_dir():
        raise CliError(f"{what} {path} is a folder, expected a JSON file")
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {what} {path}: {exc}") from None


def write_json(path: str | Path, data: Any, indent: int | None = None) -> None:
    """Atomic: a temporary file beside `path`, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(json.dumps(data, indent=indent))
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", 1) from None


def sidecar(path: str | Path, suffix: str) -> Path:
    """`results.json` + ".meta.json" → `results.meta.json`; `memory.ntt` + ".meta.json" → `memory.ntt.meta.json`."""
    path = Path(path)
    base = path.name[:-5] if path.name.endswith(".json") else path.name
    return path.with_name(base + suffix)


# ------------------------------------------------------------------------------------------------ engine config


def add_engine_options(parser, default_preset: str | None = "paper") -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--preset", choices=("paper", "fast", "synthetic"), default=None,
                       help=f"model preset (default: {default_preset or 'the one the memory was built with'}; "
                            "'synthetic' = weight-free TEST backbones for the generated dataset)")
    group.add_argument("--config", type=Path, metavar="FILE.json",
                       help='engine config overrides, e.g. {"preset": "fast", "points_per_side": 24}')
    group.add_argument("--device", help="cpu, cuda, cuda:1 … (default: auto)")


def engine_config(args, fallback: dict[str, Any] | None = None, default_preset: str = "paper"):
    """--config file (its "preset" key) < --preset < --device; without either, `fallback` (a stored config dict)."""
    from ntt_engine import EngineConfig

    overrides: dict[str, Any] = {}
    preset = None
    if args.config is not None:
        data = read_json(args.config, "config file")
        if not isinstance(data, dict):
            raise CliError(f"config file {args.config} must hold a JSON object of engine settings")
        preset = data.pop("preset", data.pop("preset_name", None))
        overrides = data
    if args.preset:
        preset = args.preset
    if preset is None and not overrides and fallback:
        return _from_dict(fallback, args.device)
    known = {f.name for f in fields(EngineConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise CliError(f"config file {args.config}: unknown engine settings {unknown}; known ones: {sorted(known)}")
    if args.device:
        overrides["device"] = args.device
    try:
        return EngineConfig.preset(preset or default_preset, **overrides)
    except (TypeError, ValueError) as exc:
        raise CliError(f"bad engine config: {exc}") from None


def _from_dict(stored: dict[str, Any], device: str | None):
    from ntt_engine import EngineConfig

    known = {f.name for f in fields(EngineConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items() if k in known}
    if device:
        values["device"] = device
    return EngineConfig(**values)


def build_engine(config):
    from ntt_engine import Engine

    try:
        return Engine(config)
    except FileNotFoundError as exc:
        raise CliError(f"cannot load the {config.preset_name!r} models: {exc}", 1) from None
    except (RuntimeError, OSError, ValueError) as exc:
        raise CliError(f"cannot build the {config.preset_name!r} engine: {str(exc).rstrip('.')}. (--preset synthetic "
                       "runs the pipeline without any weights)", 1) from None


# ------------------------------------------------------------------------------------------------ COCO inputs


@dataclass
class Coco:
    path: Path
    data: dict[str, Any]
    images: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    by_image: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def category_names(self) -> dict[int, str]:
        return {c["id"]: str(c.get("name", c["id"])) for c in self.categories}

    def image_root(self, images_dir: Path | None) -> Path:
        """--images DIR, else info.image_root (relative to the json), else the json's folder."""
        if images_dir is not None:
            if not images_dir.is_dir():
                raise CliError(f"image folder {images_dir} does not exist")
            return images_dir
        root = (self.data.get("info") or {}).get("image_root") if isinstance(self.data.get("info"), dict) else None
        return (self.path.parent / root) if root else self.path.parent


def category_ids_named(coco: Coco, classes: Sequence[str] | None, source: str | Path) -> list[int]:
    """Sorted ids of the categories called `classes` (all categories when none are given); unknown names are an
    error that lists the known ones."""
    names = coco.category_names
    if not classes:
        return sorted(names)
    by_name = {name: cat_id for cat_id, name in names.items()}
    unknown = [c for c in classes if c not in by_name]
    if unknown:
        raise CliError(f"--classes {unknown} are not categories of {source}; known: {sorted(by_name)}")
    return sorted(by_name[c] for c in classes)


def load_coco(path: str | Path, what: str = "COCO file", need_categories: bool = True) -> Coco:
    path = Path(path)
    data = read_json(path, what)
    if isinstance(data, list):
        raise CliError(f"{path} is a JSON list, expected a COCO dataset object with 'images' (a results list? "
                       "pass it as the results argument instead)")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CliError(f"{path} is not a COCO dataset: it needs an 'images' list")
    images = data["images"]
    annotations = data.get("annotations") or []
    categories = data.get("categories") or []
    if need_categories and not categories:
        raise CliError(f"{path} has no 'categories'; list the classes as [{{'id': 1, 'name': 'cat'}}, …]")
    for i, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise CliError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
    ids = [image["id"] for image in images]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise CliError(f"{path}: duplicate image ids {examples(dupes)}")
    cat_ids = {c.get("id") for c in categories}
    known_images = set(ids)
    bad_cat, bad_img = [], []
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in annotations:
        if ann.get("category_id") not in cat_ids:
            bad_cat.append(f"annotation {ann.get('id')} (category_id {ann.get('category_id')})")
        if ann.get("image_id") not in known_images:
            bad_img.append(f"annotation {ann.get('id')} (image_id {ann.get('image_id')})")
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    if bad_cat:
        raise CliError(f"{path}: {plural(len(bad_cat), 'annotation')} with a category id that is not in "
                       f"'categories' (ids {sorted(cat_ids, key=str)}): {examples(bad_cat)}. Add the category or "
                       "remove those annotations")
    if bad_img:
        raise CliError(f"{path}: {plural(len(bad_img), 'annotation')} with an image id that is not in 'images': "
                       f"{examples(bad_img)}")
    return Coco(path, data, images, categories, annotations, by_image)


def resolve_images(coco: Coco, root: Path, skip_missing: bool, images: list[dict] | None = None
                   ) -> list[tuple[dict, Path]]:
    """(image record, file path) for each image; missing files are an error, or a warning with --skip-missing."""
    found, missing = [], []
    for image in coco.images if images is None else images:
        file = root / str(image["file_name"])
        (found if file.is_file() else missing).append((image, file))
    if missing:
        names = [str(m[0]["file_name"]) for m in missing]
        message = (f"{plural(len(missing), 'image')} listed in {coco.path} not found under {root}: "
                   f"{examples(names)}")
        if not skip_missing:
            raise CliError(message + ". Point --images at the folder that holds them, or pass --skip-missing")
        log.warning("%s; skipped (--skip-missing)", message)
    return found


def list_image_dir(folder: Path) -> list[Path]:
    if not folder.exists():
        raise CliError(f"{folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise CliError(f"{folder} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                       "pass a folder of images or a COCO json")
    return files


def annotation_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray | None:
    """The annotation's mask at (height, width); None when it has no segmentation (box only)."""
    from ntt_engine.export import polygons_to_mask, rle_to_mask

    seg = ann.get("segmentation")
    if not seg:
        return None
    if isinstance(seg, dict):
        size = seg.get("size")
        if not size or list(size) != [height, width]:
            raise CliError(f"annotation {ann.get('id')}: RLE size {size} does not match its image ({height}x{width} "
                           "as [height, width])")
        return rle_to_mask(seg)
    if isinstance(seg, list):
        polygons = [p for p in seg if isinstance(p, list) and len(p) >= 6]
        return polygons_to_mask(polygons, height, width) if polygons else None
    raise CliError(f"annotation {ann.get('id')}: unreadable segmentation of type {type(seg).__name__}")


def xywh_to_xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]
