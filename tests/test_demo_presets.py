"""The demo's preset, as the README states it: `synthetic` unless the `fast` checkpoints are cached (then `fast`);
$NTT_PRESET overrides both, and --preset overrides everything."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def presets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("NTT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NTT_PRESET", raising=False)
    spec = importlib.util.spec_from_file_location("demo_presets", REPO / "scripts" / "demo_presets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cache_fast_checkpoints(presets) -> None:
    for _, _, path in presets.required_checkpoints("fast"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"placeholder")


def test_synthetic_without_cached_checkpoints(presets):
    assert presets.pick_preset("auto") == "synthetic"


def test_fast_once_its_checkpoints_are_cached(presets):
    _cache_fast_checkpoints(presets)
    assert presets.pick_preset("auto") == "fast"


def test_one_checkpoint_is_not_enough(presets):
    _cache_fast_checkpoints(presets)
    presets.required_checkpoints("fast")[0][2].unlink()
    assert presets.pick_preset("auto") == "synthetic"


def test_environment_and_flag_override(presets, monkeypatch: pytest.MonkeyPatch):
    _cache_fast_checkpoints(presets)
    monkeypatch.setenv("NTT_PRESET", "paper")
    assert presets.pick_preset("auto") == "paper"
    assert presets.pick_preset("synthetic") == "synthetic"
