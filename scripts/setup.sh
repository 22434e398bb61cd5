#!/usr/bin/env bash
# Create (or update) the two virtual environments this project uses:
#   .venv     the backend, engine, CLI and tests (torch, sam2, timm, Flask, Ray, ...)
#   .venv-ls  Label Studio 1.23.2 itself, kept apart so its pins never touch ours
# Idempotent: a stamp file records what was installed; rerunning with unchanged requirements does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

CPU_INDEX=https://download.pytorch.org/whl/cpu
TIMEOUT_CMD=$(command -v timeout >/dev/null 2>&1 && echo "timeout 8" || true)

# Which wheel index torch comes from: $TORCH_INDEX when set (empty: the default index); else, without an NVIDIA GPU,
# PyTorch's CPU-only wheels (about 0.2 GB to download instead of several GB of CUDA libraries), when that index can
# be reached within 5 s; else the default index (pip's configuration, e.g. PyPI or a mirror).
pick_torch_index() {
  if [ -n "${TORCH_INDEX+set}" ]; then
    echo "[setup] torch from TORCH_INDEX=${TORCH_INDEX:-<default index>}" >&2; echo "$TORCH_INDEX"; return
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU tools found: torch with CUDA from the default index" >&2; return
  fi
  # `timeout` bounds the DNS lookup too, which urlopen's timeout does not
  if ${TIMEOUT_CMD:-} "$PYTHON" - "$CPU_INDEX/" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=5)
PY
  then
    echo "[setup] no NVIDIA GPU: torch from the CPU-only wheel index $CPU_INDEX" >&2; echo "$CPU_INDEX"
  else
    echo "[setup] no NVIDIA GPU, but $CPU_INDEX cannot be reached: torch from the default index (its CUDA build" \
         "is several GB larger; set TORCH_INDEX to a CPU wheel mirror to avoid that)" >&2
  fi
}

want=$(stamp_of requirements.txt requirements-dev.txt pyproject.toml)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.ntt-stamp 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing the project into .venv"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip wheel
  # torch first, by exact version, so that no other package pulls a different build
  torch_index=$(pick_torch_index)
  .venv/bin/pip install -q ${torch_index:+--index-url "$torch_index"} "torch==2.14.1" "torchvision==0.29.1"
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
# The tests start a real PostgreSQL server (tests/support/local_postgres.py): Debian's package, when it is missing
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing PostgreSQL (Debian's postgresql package) for the state-store tests"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
  else
    echo "[setup] PostgreSQL is missing: install it (apt-get install postgresql) for the state-store tests" >&2
  fi
fi
echo "[setup] ready: .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')), .venv-ls (label-studio 1.23.2)"
