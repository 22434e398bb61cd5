"""Files of the `ntt` commands: JSON read with errors that name the file, written atomically, sidecar names, and
the images of a folder."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ntt_cli.console import CliError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


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


def list_image_dir(folder: Path) -> list[Path]:
    if not folder.exists():
        raise CliError(f"{folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise CliError(f"{folder} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                       "pass a folder of images or a COCO json")
    return files
