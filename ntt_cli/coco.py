"""COCO inputs of the `ntt` commands: a dataset checked on load (ids, categories, annotations), its image folder,
annotation masks (RLE or polygons) and boxes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ntt_cli.console import CliError, examples, log, plural
from ntt_cli.files import read_json


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
