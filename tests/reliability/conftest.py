"""Reliability and security figures of the ML backend (issue 7), measured on the backend running as a real separate
process (the development server, or gunicorn with several workers) on 127.0.0.1, against local fake servers.

Each test records one line per figure with the `figure` fixture; the lines are printed together at the end of the
pytest run ("reliability figures") and, when NTT_RELIABILITY_FIGURES names a file, appended to it.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from support.backend_helpers import HEIGHT, WIDTH, Dataset

FIGURES: list[tuple[str, str]] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, text in FIGURES:
        terminalreporter.write_line(f"{name}: {text}")


@pytest.fixture
def figure():
    """figure(name, text): record one measured figure (printed in the terminal summary)."""
    def record(name: str, text: str) -> None:
        FIGURES.append((name, text))
        print(f"[reliability] {name}: {text}", file=sys.stderr)
        target = os.environ.get("NTT_RELIABILITY_FIGURES")
        if target:
            with open(target, "a") as out:
                out.write(json.dumps({"figure": name, "text": text}) + "\n")
    return record


@pytest.fixture(scope="session")
def rel_dataset(tmp_path_factory) -> Dataset:
    """12 synthetic 160x120 images (2 classes) under a document root served as Label Studio local files."""
    from ntt_engine.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("rel-docroot")
    path = generate_dataset(root, images=12, classes=2, seed=3, size=(WIDTH, HEIGHT))
    return Dataset(root, json.loads(Path(path).read_text()))
