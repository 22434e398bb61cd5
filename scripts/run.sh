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

if [ ! -x .venv/bin/python ] || { [ -z "${NTT_LABEL_STUDIO_BIN:-}" ] && [ ! -x .venv-ls/bin/label-studio ]; }; then
  echo "== first run: creating the virtual environments (several minutes: torch, Label Studio)"
  PYTHON="$PYTHON" scripts/setup.sh
fi

exec .venv/bin/python scripts/run_demo.py "$@"
