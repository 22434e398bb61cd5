#!/usr/bin/env bash
# The GPU run of issue 18, in one script (under 8 minutes on one H100): on a machine with a CUDA GPU,
#   1. both presets' stage costs with decoder batches of 256 and peak GPU memory (bench_pipeline.py: JSON + chart),
#   2. bf16 / fp16 autocast against fp32: gate decisions, mask IoU, scores, peak GPU memory (autocast_parity.py),
#   3. paper against the SAM2ImagePredictor reconstruction of the reference (bench_side_by_side.py).
# Random weights (pretrained files cannot be fetched there either); costs do not depend on them.
#
#   benchmarks/gpu_check.sh [OUT]        # OUT: where the JSON and the chart go (default benchmarks/results/gpu)
#
# PYTHON picks the interpreter (default .venv/bin/python, as scripts/setup.sh builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/gpu}"
python="${PYTHON:-.venv/bin/python}"
mkdir -p "$out"

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no CUDA device here; run this on a machine with a GPU" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" 2>/dev/null || true
started=$SECONDS
step() {  # name, time limit in seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "[gpu_check] $name (at most ${limit} s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
}
step stages 240 "$python" benchmarks/bench_pipeline.py --device cuda --out "$out"
step autocast 120 "$python" benchmarks/autocast_parity.py --device cuda --out "$out/autocast_parity.json"
step side_by_side 90 "$python" benchmarks/bench_side_by_side.py --device cuda --rounds 3 --out "$out"
echo "[gpu_check] done in $((SECONDS - started)) s: $(ls "$out" | tr '\n' ' ')"
