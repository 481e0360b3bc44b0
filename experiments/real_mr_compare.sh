#!/usr/bin/env bash
# Score fine-tuned checkpoints side by side, in one run each of up to three measurements
# (docs/studies/real_mr_transfer.md; results in RESULTS, default docs/results/real_mr_transfer):
#   real  the real head (experiments/real_mr_check.py) -> runs/real_mr_TAG, RESULTS/real_mr_check_TAG.json
#   test  the three head-and-neck test cases, sharp and blurred (experiments/blur_robustness.py)
#         -> RESULTS/blur_robustness_TAG.json
#   val   the validation protocol that may choose between models trained on different phantom sets: the
#         validation ids of every data root in ROOTS (no model here trained on any), sharp and blurred
#         (blur_robustness.py --subset val) -> RESULTS/validation_TAG.json
# MEASURE: which of them, comma-separated (default real,test). The varying-CSF recipe (docs/studies/real_mr_transfer.md, row 5) is
#   EXTRAS="l1_csf_mix=runs/csf_mix_hn/best.pt l1_csf_mix_last=runs/csf_mix_hn/last.pt \
#           l1_csf_sharp=runs/csf_sharp_hn/best.pt" TAG=csf bash experiments/real_mr_compare.sh
# MODELS: the shipped entries scored alongside (default l1,l1_smooth_hn); EXTRAS: NAME=checkpoint pairs.
# A prepared head (runs/real_mr_*/case) is reused when PREPARED names one; otherwise it is registered (~60 s).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TAG=${TAG:?TAG names the outputs: runs/real_mr_TAG, RESULTS/real_mr_check_TAG.json, RESULTS/blur_robustness_TAG.json}
RESULTS=${RESULTS:-docs/results/real_mr_transfer}
MODELS=${MODELS:-l1,l1_smooth_hn}
EXTRAS=${EXTRAS:?EXTRAS lists NAME=checkpoint pairs}
MEASURE=${MEASURE:-real,test}
ROOTS=${ROOTS:-data/phantoms_final data/phantoms_var2_hn data/phantoms_var3_hn}
export SCT_THREADS=${SCT_THREADS:-2}
mkdir -p "$RESULTS"

args=()
names=$MODELS
for pair in $EXTRAS; do
  args+=(--extra "$pair")
  names="$names,${pair%%=*}"
done
$PY experiments/make_eval_manifest.py --out "runs/eval_$TAG/manifest.json" "${args[@]}"
if [[ ,$MEASURE, == *,real,* ]]; then
  prepared=()
  [[ -n ${PREPARED:-} ]] && prepared=(--prepared "$PREPARED")
  $PY experiments/real_mr_check.py "${prepared[@]}" --models "$names" --manifest "runs/eval_$TAG/manifest.json" \
    --out "runs/real_mr_$TAG"
  cp "runs/real_mr_$TAG/report.json" "$RESULTS/real_mr_check_$TAG.json"
fi
if [[ ,$MEASURE, == *,test,* ]]; then
  $PY experiments/blur_robustness.py --models "$names" --manifest "runs/eval_$TAG/manifest.json" \
    --cases 1HNA004,1HNA005,1HND004 --sigmas 0,1.5,3 --out "$RESULTS/blur_robustness_$TAG.json"
fi
if [[ ,$MEASURE, == *,val,* ]]; then
  # shellcheck disable=SC2086  # ROOTS is a list of paths
  $PY experiments/blur_robustness.py --subset val --data $ROOTS --cases 1HND001,1HND002 --sigmas 0,1.5,3 \
    --models "$names" --manifest "runs/eval_$TAG/manifest.json" --out "$RESULTS/validation_$TAG.json"
fi
