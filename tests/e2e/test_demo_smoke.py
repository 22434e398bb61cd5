"""The README's first command, end to end: scripts/run.sh (venvs present) -> scripts/run_demo.py --no-wait in a
fresh data dir: Label Studio + backend start, the demo project is created, connected, references labelled, every
task pre-labelled, the URL and login printed, and both servers stopped again."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from local_stack import REPO, free_port, label_studio_bin, port_in_use

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_demo_sets_up_and_stops(tmp_path: Path):
    assert label_studio_bin().exists(), f"Label Studio not found at {label_studio_bin()} (see scripts/run.sh)"
    ls_port, backend_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "NTT_PRESET"))}
    env["NTT_CACHE_DIR"] = str(tmp_path / "cache")
    cmd = ["bash", str(REPO / "scripts" / "run.sh"), "--no-wait", "--data-dir", str(tmp_path / "demo"),
           "--ls-port", str(ls_port), "--backend-port", str(backend_port)]
    done = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=220)
    out = done.stdout + done.stderr
    print(out, file=sys.stderr)
    assert done.returncode == 0, out
    assert "engine preset: synthetic" in out
    assert re.search(rf"Label Studio: http://localhost:{ls_port}/projects/\d+/data", out), out
    assert "login:        admin@example.com" in out
    match = re.search(r"pre-labelled (\d+) of (\d+) tasks", out)
    assert match and match.group(1) == match.group(2) != "0", out
    # --no-wait stops both servers before it returns
    assert not port_in_use(ls_port) and not port_in_use(backend_port)
    assert (tmp_path / "demo" / "ls" / "ntt-demo-token").stat().st_mode & 0o077 == 0
