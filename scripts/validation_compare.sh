#!/usr/bin/env bash
# Rank models trained on different phantom sets with one validation protocol (README "Real MR", seventh attempt):
# every model scores the validation ids of each data root (the shipped phantoms and both variability sets; no
# model here trained on any of them), sharp and blurred in-plane (benchmarks/blur_robustness.py --subset val).
# Validation, not the real head and not the test split, chooses what ships.
#   TAG names the outputs (runs/eval_TAG/manifest.json, docs/validation_TAG.json); MODELS: shipped entries;
#   EXTRAS: NAME=checkpoint pairs exported into the run's manifest; ROOTS and CASES: the data roots and ids.
# For example:
#   MODELS=l1_smooth_hn EXTRAS="l1_rim_p30=runs/rim_p30_hn/best.pt" TAG=candidates bash scripts/validation_compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TAG=${TAG:?TAG names the outputs}
MODELS=${MODELS:-l1_smooth_hn}
EXTRAS=${EXTRAS:-}
ROOTS=${ROOTS:-data/phantoms_final data/phantoms_var2_hn data/phantoms_var3_hn}
CASES=${CASES:-1HND001,1HND002}
export SCT_THREADS=${SCT_THREADS:-2}

args=()
names=$MODELS
for pair in $EXTRAS; do
  args+=(--extra "$pair")
  names="$names,${pair%%=*}"
done
$PY benchmarks/make_eval_manifest.py --out "runs/eval_$TAG/manifest.json" "${args[@]}"
# shellcheck disable=SC2086  # ROOTS is a list of paths
$PY benchmarks/blur_robustness.py --subset val --data $ROOTS --cases "$CASES" --sigmas 0,1.5,3 \
  --models "$names" --manifest "runs/eval_$TAG/manifest.json" --out "docs/validation_$TAG.json"
