#!/usr/bin/env bash
# Create (or update) the two virtual environments this project uses:
#   .venv     the backend, engine, CLI and tests (torch, sam2, timm, Flask, Ray, ...)
#   .venv-ls  Label Studio 1.23.2 itself, kept apart so its pins never touch ours
# Idempotent: a stamp file records what was installed; rerunning with unchanged requirements does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

want=$(stamp_of requirements.txt requirements-dev.txt pyproject.toml)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.ntt-stamp 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing the project into .venv"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip wheel
  # torch first, by exact version, so that no other package pulls a different build;
  # TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu) picks a wheel index, such as the small CPU-only wheels
  .venv/bin/pip install -q ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/pip install -q -r requirements-dev.txt
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" > .venv/.ntt-stamp
fi

if [ -z "${NTT_SKIP_LS_VENV:-}" ] && [ ! -x .venv-ls/bin/label-studio ]; then
  echo "[setup] installing Label Studio 1.23.2 into .venv-ls"
  "$PYTHON" -m venv .venv-ls
  .venv-ls/bin/pip install -q --upgrade pip
  .venv-ls/bin/pip install -q "label-studio==1.23.2"
fi
echo "[setup] ready: .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')), .venv-ls (label-studio 1.23.2)"
