#!/usr/bin/env bash
# The demo on a fresh machine, without Docker: creates the two virtual environments when they are missing
# (scripts/setup.sh: .venv for this project, .venv-ls for Label Studio 1.23.2, whose pins clash with ours), then runs
# scripts/run_demo.py: Label Studio + this backend + a demo project, connected; Ctrl-C stops both.
#
#   scripts/run.sh                      # synthetic preset: no model weights needed
#   scripts/run.sh --preset fast        # real models; checkpoints are downloaded, or named for you when offline
#   scripts/run.sh --help               # every option of run_demo.py
#
# Environment: PYTHON (default python3, >= 3.10), NTT_CACHE_DIR (checkpoints, default ~/.cache/ntt),
# NTT_LABEL_STUDIO_BIN (an existing `label-studio` executable instead of .venv-ls).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  echo "error: $PYTHON is missing or older than 3.10 (Label Studio 1.23.2 needs >= 3.10); set PYTHON=..." >&2
  exit 2
fi

# the same installer as the tests use (idempotent: a no-op when both venvs are current)
if [ -n "${NTT_LABEL_STUDIO_BIN:-}" ]; then export NTT_SKIP_LS_VENV=1; fi
scripts/setup.sh

exec .venv/bin/python scripts/run_demo.py "$@"
