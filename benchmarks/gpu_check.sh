#!/usr/bin/env bash
# The first-GPU check (benchmarks/gpu_check.py), under 10 minutes on a GPU machine: CUDA really used, GPU vs CPU
# parity in HU, seconds per case and per slice for drifting and the latent model at N = 10 and 20 on a
# 400 x 400 x 100 case, peak GPU memory (sampled while each GPU run goes on). One JSON line on stdout, report.json
# + report.md in runs/gpu_check.
#   bash benchmarks/gpu_check.sh [--cpu-only] [--shape z,y,x]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] && PY=.venv/bin/python || PY=python3
exec "$PY" benchmarks/gpu_check.py --out runs/gpu_check "$@"
