"""Stage timing with a synchronising clock (what the GPU benchmarks use), and benchmarks/gpu_check.sh refusing
clearly where torch sees no GPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ntt_engine.timing import StageTimes

ROOT = Path(__file__).resolve().parents[1]


def test_a_synchronising_stage_clock_waits_before_and_after_each_stage():
    calls = []
    times = StageTimes(synchronize=lambda: calls.append("sync"))
    with times.measure("decoder"):
        calls.append("work")
    assert calls == ["sync", "work", "sync"]
    assert times.calls["decoder"] == 1 and times.seconds["decoder"] >= 0
    plain = StageTimes()
    with plain.measure("decoder"):
        pass
    assert plain.synchronize is None and plain.calls["decoder"] == 1


def test_gpu_check_says_it_needs_a_gpu(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "gpu")],
                         capture_output=True, text=True, timeout=120,  # no GPU visible, even on a GPU machine
                         env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 2 and "no CUDA device" in run.stderr, (run.returncode, run.stderr)
    assert not any((tmp_path / "gpu").glob("*.json"))
