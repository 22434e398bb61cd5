"""Shared fixtures of the `ntt` CLI tests: small generated datasets and one in-process run of the whole chain."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import TEST_IMAGES, cli


@dataclass(frozen=True)
class Chain:
    refs: Path  # generated reference dataset (instances.json)
    test: Path  # generated test dataset (instances.json)
    sampled: Path  # ntt sample output
    memory: Path  # ntt memory build output
    results: Path  # ntt predict output (in-process, uninterrupted)
    report: dict  # ntt eval --json output

    @property
    def test_images(self) -> Path:
        return self.test.parent / "images"


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    from ntt_engine.synthetic import generate_dataset

    base = tmp_path_factory.mktemp("data")
    # references at 320x240 so that enough instances pass the paper's size/border rules; targets small and quick
    refs = generate_dataset(base / "refs", images=24, classes=3, seed=1, size=(320, 240))
    test = generate_dataset(base / "test", images=TEST_IMAGES, classes=3, seed=2, size=(160, 120))
    return refs, test


@pytest.fixture(scope="session")
def chain(datasets, tmp_path_factory) -> Chain:
    refs, test = datasets
    out = tmp_path_factory.mktemp("chain")
    assert cli("sample", refs, "--shots", "3", "--seed", "33", "-o", out / "refs3.json") == 0
    assert cli("memory", "build", out / "refs3.json", "-o", out / "memory.ntt", "--preset", "synthetic") == 0
    assert cli("predict", out / "memory.ntt", test, "-o", out / "results.json") == 0
    assert cli("eval", test, out / "results.json", "-o", out / "eval.json") == 0
    return Chain(refs, test, out / "refs3.json", out / "memory.ntt", out / "results.json",
                 json.loads((out / "eval.json").read_text()))
