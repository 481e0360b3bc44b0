#!/usr/bin/env bash
# The k-fold / ensemble / flip-TTA / per-region evidence on the phantom test split, end to end on this 2-core CPU
# (about 2.5 hours): 3 fold models and 3 region models, each fine-tuned from the same 7500-step L1 weights the
# shipped l1 started from, then one compare_models run over every variant.
#   fold K:   3000 steps on the 3-fold split's training folds (2/3 of train+val), its own fold validates
#   region R: 1000 steps on region R only (3 x 1000 = the 3000 steps of the all-region model)
# Needs data/phantoms_final (python -m phantoms --out data/phantoms_final --regions HN,TH,AB --cases 15 --seed 0).
# STAGE=train, compare or summary runs one part (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=runs/kfold
STAGE=${STAGE:-all}
mkdir -p "$OUT"
git show 504f568:model_weights/l1.onnx >"$OUT/l1_7500.onnx"  # the 7500-step weights the shipped l1 started from

common=(--config configs/drifting.toml --set model.kind=l1 --set optim.cpu_bf16=false --set run.threads=1
  --set "run.init_from=$OUT/l1_7500.onnx")

train_fold() {
  $PY -m training.train "${common[@]}" --set optim.steps=3000 --set run.val_every=1500 \
    --set data.split=configs/splits/phantoms_final_3fold.json --set "run.out_dir=$OUT/l1" --fold "$1" \
    >"$OUT/fold_$1.log" 2>&1
}

train_region() {
  $PY -m training.train "${common[@]}" --config "configs/regions/$1.toml" --set optim.steps=1000 \
    --set run.val_every=500 --set "run.out_dir=$OUT/region/$1" >"$OUT/region_$1.log" 2>&1
}

if [[ $STAGE == all || $STAGE == train ]]; then
  train_fold 0 &
  train_fold 1 &
  wait
  train_fold 2 &
  (for region in HN TH AB; do train_region "$region"; done) &
  wait
fi

if [[ $STAGE == all || $STAGE == compare ]]; then
  $PY experiments/make_eval_manifest.py --out "$OUT/eval/manifest.json" \
    --fold "$OUT/l1/fold_0/best.pt" --fold "$OUT/l1/fold_1/best.pt" --fold "$OUT/l1/fold_2/best.pt" \
    --region "HN=$OUT/region/HN/best.pt" --region "TH=$OUT/region/TH/best.pt" --region "AB=$OUT/region/AB/best.pt"
  SCT_THREADS=2 $PY benchmarks/compare_models.py --data data/phantoms_final --manifest "$OUT/eval/manifest.json" \
    --models l1,l1_tta,l1_fold0,l1_fold1,l1_fold2,l1_folds,l1_folds_tta,routes --out "$OUT/compare"
fi

if [[ $STAGE == all || $STAGE == compare || $STAGE == summary ]]; then
  $PY experiments/ensemble_summary.py --comparison "$OUT/compare/comparison.json" --folds l1_fold0,l1_fold1,l1_fold2 \
    --out docs/results/folds_and_tta/test_comparison_kfold.json
fi
