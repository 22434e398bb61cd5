"""Helpers of the `ntt` CLI tests (imported by the tests and conftest)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_IMAGES = 24


def cli(*args: str) -> int:
    """Run `ntt ARGS…` in-process."""
    from ntt_cli.main import main

    return main([str(a) for a in args])


def cli_subprocess(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m ntt_cli ARGS…` (the real entry point) and capture its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "ntt_cli", *[str(a) for a in args]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)
