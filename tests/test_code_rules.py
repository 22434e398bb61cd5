"""The code's own rules, checked by the test command: ruff's lint and the import-linter contracts in pyproject.toml
(the backend's layers; the engine never imports the backend or the CLI). A wrong import fails the suite here."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    done = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert done.returncode == 0, f"ruff check . failed:\n{done.stdout}\n{done.stderr}"


def test_import_contracts_are_kept():
    done = _run(str(BIN / "lint-imports"), "--no-cache")
    assert done.returncode == 0, f"lint-imports: a contract in pyproject.toml is broken:\n{done.stdout}\n{done.stderr}"
    assert "BROKEN" not in done.stdout
