#!/usr/bin/env bash
# The first-GPU check (benchmarks/gpu_check.py), under 10 minutes on a GPU machine: CUDA really used, GPU vs CPU
# parity in HU, seconds per case and per slice for drifting and the latent model at N = 10 and 20 on a
# 400 x 400 x 100 case, peak GPU memory (sampled while each GPU run goes on). One JSON line on stdout, report.json
# + report.md in runs/gpu_check; then the generator presets' torch timings (benchmarks/gpu_presets.py), one more JSON line.
#   bash benchmarks/gpu_check.sh [--cpu-only] [--shape z,y,x]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] && PY=.venv/bin/python || PY=python3
"$PY" benchmarks/gpu_check.py --out runs/gpu_check "$@"
# The generator presets S, M, L under torch (forward seconds per 512 x 512 slice, one release-recipe training step
# with AMP and the anatomy loss, peak memory; about a minute): runs/gpu_check/presets.json. Skipped without CUDA.
[[ " $* " == *" --cpu-only "* ]] || "$PY" benchmarks/gpu_presets.py --out runs/gpu_check/presets.json
