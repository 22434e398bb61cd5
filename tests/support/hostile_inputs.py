"""Hostile inputs of the reliability round 2 (issue 12): crafted brush RLEs, an EPS file with a Ghostscript that
tells on itself, Label-Studio-shaped bulk events, and the case table runner shared by the round-2 tests."""
from __future__ import annotations

import copy
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

__all__ = ["Case", "run_cases", "rle_bits", "rle_wide_words", "rle_many_blocks", "fake_ghostscript", "eps_file",
           "bulk_created", "flat_png", "PROM_LINE"]

# one sample line of the Prometheus text format: name{label="value",...} number
PROM_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                       r'(-?[0-9.eE+-]+|NaN|[+-]Inf)$')


@dataclass
class Case:
    item: str  # the item, e.g. "defect 1"
    name: str
    check: Callable[[], list[str]]  # the problems found; [] when the case holds


def run_cases(cases: list[Case], alive: Callable[[], bool]) -> tuple[int, list[str]]:
    """(cases that held, "item / name: problems" for the others); a case that raises is a failure, not a crash."""
    held, failures = 0, []
    for case in cases:
        started = time.monotonic()
        try:
            problems = case.check()
        except Exception as exc:  # noqa: BLE001 - report every case, not only the first that breaks
            problems = [f"raised {type(exc).__name__}: {exc}"]
        if not alive():
            problems.append("the backend died")
        if problems:
            failures.append(f"{case.item} / {case.name} ({time.monotonic() - started:.1f} s): {'; '.join(problems)}")
        else:
            held += 1
        if not alive():
            break
    return held, failures


# ------------------------------------------------------------------------------------------------ brush RLEs
def rle_bits(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big")) if bits else []


def _header(values: int, word: int, sizes: tuple[int, int, int, int]) -> str:
    return format(values, "032b") + format(word - 1, "05b") + "".join(format(s - 1, "04b") for s in sizes)


def rle_wide_words(width: int, height: int, value: int = 300) -> list[int]:
    """A well-formed RLE of 16-bit words whose value (300) no brush byte can hold."""
    total = width * height * 4
    block = "1" + "00" + format(65535, "016b") + format(value, "016b")
    return rle_bits(_header(total, 16, (16, 16, 16, 16)) + block * -(-total // 65536))


def rle_many_blocks(width: int, height: int, max_bytes: int) -> list[int]:
    """A valid RLE of an all-255 canvas made of as many 1-value blocks (12 bits each) as `max_bytes` allows, the
    rest in 65536-value blocks: the most decoding work per byte."""
    total = width * height * 4
    tiny, big = "1" + "00" + "0" + "11111111", "1" + "01" + format(65535, "016b") + "11111111"
    small = 0
    for _ in range(3):  # solve 12·k + 27·ceil((total-k)/65536) ≈ 8·max_bytes - header
        small = max(0, min(total, (8 * max_bytes - 53 - 27 * -(-(total - small) // 65536)) // 12))
    rest = total - small
    return rle_bits(_header(total, 8, (1, 16, 1, 1)) + tiny * small + big * -(-rest // 65536))


# ------------------------------------------------------------------------------------------------ files
def flat_png(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), (90, 120, 30)).save(path)
    return path


def fake_ghostscript(bin_dir: Path, marker: Path) -> Path:
    """A `gs` on PATH that records it was run (and fails): Pillow's EPS plugin runs `gs` to render PostScript."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 1\n")
    gs.chmod(gs.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return gs


def eps_file(path: Path) -> Path:
    path.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 160 120\n%%EndComments\n"
                    "newpath 0 0 moveto 160 120 lineto stroke showpage\n%%EOF\n")
    return path


# ------------------------------------------------------------------------------------------------ events
def bulk_created(pairs: list[tuple[dict, dict]], project: int) -> dict:
    """ANNOTATIONS_CREATED (an import): lists of annotations and their tasks, from single-event payloads."""
    annotations = [copy.deepcopy(p["annotation"]) for p, _ in pairs]
    tasks = [copy.deepcopy(t) for _, t in pairs]
    first = pairs[0][0]
    return {"action": "ANNOTATIONS_CREATED", "annotation": annotations, "task": tasks,
            "project": copy.deepcopy(first["project"]) | {"id": project}}


def env_path(extra: Path) -> str:
    return f"{extra}:{os.environ.get('PATH', '/usr/bin:/bin')}"
