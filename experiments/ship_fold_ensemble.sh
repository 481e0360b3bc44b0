#!/usr/bin/env bash
# Ship the fold ensemble with flip TTA as every region's primary (only if the pre-stated rule passed).
# Since issue 36 every region's primary is l1_flip (docs/studies/distillation.md): rerunning this routes them back.
# Run after experiments/kfold_experiment.sh (it needs runs/kfold/l1/fold_K/best.pt); then update the shipped-primary
# test (test/test_model_work.py), regenerate the container expectations (python test/container/make_expected.py)
# and the tables of docs/studies/folds_and_tta.md and docs/studies/test_split.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
for k in 0 1 2; do
  $PY -m training.export --checkpoint runs/kfold/l1/fold_$k/best.pt --name l1_fold$k \
    --description "L1 generator, fold $k of configs/splits/phantoms_final_3fold.json: 7500 steps on all train cases, then 3000 on the other two folds (experiments/kfold_experiment.sh); a member of l1_folds" \
    --provenance '{"initial_weights": "model_weights/l1.onnx of commit 504f568: the same recipe for 7500 steps (runs/long_l1)", "total_steps": 10500}'
done
$PY -m training.export --ensemble-of l1_fold0,l1_fold1,l1_fold2 --name l1_folds --flip-tta --regions HN,TH,AB,BRAIN,PELVIS \
  --description "mean of the three fold models, each with left-right flip TTA (6 network evaluations per slice); every region's primary"
