#!/usr/bin/env bash
# Score fine-tuned checkpoints side by side, in one run each of the two measurements (README "Real MR"):
# the real head (benchmarks/real_mr_check.py) and the three head-and-neck test cases, sharp and blurred
# (benchmarks/blur_robustness.py). The fifth attempt (brains with varying CSF spaces) is
#   EXTRAS="l1_csf_mix=runs/csf_mix_hn/best.pt l1_csf_mix_last=runs/csf_mix_hn/last.pt \
#           l1_csf_sharp=runs/csf_sharp_hn/best.pt" TAG=csf bash scripts/real_mr_compare.sh
# MODELS: the shipped entries scored alongside (default l1,l1_smooth_hn); EXTRAS: NAME=checkpoint pairs.
# A prepared head (runs/real_mr_*/case) is reused when PREPARED names one; otherwise it is registered (~60 s).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TAG=${TAG:?TAG names the outputs: runs/real_mr_TAG, docs/real_mr_check_TAG.json, docs/blur_robustness_TAG.json}
MODELS=${MODELS:-l1,l1_smooth_hn}
EXTRAS=${EXTRAS:?EXTRAS lists NAME=checkpoint pairs}
export SCT_THREADS=${SCT_THREADS:-2}

args=()
names=$MODELS
for pair in $EXTRAS; do
  args+=(--extra "$pair")
  names="$names,${pair%%=*}"
done
$PY benchmarks/make_eval_manifest.py --out "runs/eval_$TAG/manifest.json" "${args[@]}"
prepared=()
[[ -n ${PREPARED:-} ]] && prepared=(--prepared "$PREPARED")
$PY benchmarks/real_mr_check.py "${prepared[@]}" --models "$names" --manifest "runs/eval_$TAG/manifest.json" \
  --out "runs/real_mr_$TAG"
cp "runs/real_mr_$TAG/report.json" "docs/real_mr_check_$TAG.json"
$PY benchmarks/blur_robustness.py --models "$names" --manifest "runs/eval_$TAG/manifest.json" \
  --cases 1HNA004,1HNA005,1HND004 --sigmas 0,1.5,3 --out "docs/blur_robustness_$TAG.json"
