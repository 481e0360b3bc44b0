#!/usr/bin/env bash
# Distil the fold ensemble with flip TTA (l1_folds: 6 network evaluations per slice) into one network (issue 36).
#   STAGE=teacher | train | eval | all (default); REGIONS (default HN,TH,AB); WEIGHT (teacher share, default 0.7);
#   STEPS (default 2500); THREADS (default 2); PY (default .venv/bin/python); INIT (default model_weights/l1.onnx,
#   empty: from scratch); SCHEDULE (cosine or constant, default cosine); VAL_EVERY (default 500); STUDENT (the run
#   folder's name, default student); PLAIN (1: also the plain comparator, default 1); FLIP (share of left-right
#   mirrored crops, default 0); MODELS (eval: the models, default l1_folds,l1,l1_student,l1_plain_ft).
# Recipe 2, the student from scratch for l1's budget (10 500 steps, constant rate, as l1 was trained):
#   STAGE=train INIT= SCHEDULE=constant STEPS=10500 VAL_EVERY=3500 THREADS=1 PLAIN=0 STUDENT=scratch_student \
#     bash experiments/distil_study.sh
# Recipe 3, no teacher: l1 fine-tuned on the plain phantoms with half the crops mirrored, and without (comparator):
#   STAGE=train ROOT=data/phantoms_final STEPS=3000 VAL_EVERY=1500 THREADS=1 PLAIN=0 FLIP=0.5 STUDENT=flip_ft \
#     bash experiments/distil_study.sh   # and the same with FLIP=0 STUDENT=noflip_ft
# teacher: every training case of the committed phantom split through process.py with l1_folds (training/distil.py),
#          its target CT = WEIGHT * teacher sCT + (1 - WEIGHT) * CT in the body; validation keeps the real CT.
# train:   the shipped S network from model_weights/l1.onnx, L1, cosine, bf16, on that root (REGIONS only), best
#          validation checkpoint; the same steps on the plain phantoms as the equal-budget comparator.
# eval:    the student, the comparator, l1 and l1_folds on the untouched test split (REGIONS) in one run, with the
#          dosimetry metrics; the ship rule is in docs/studies/distillation.md (written before the numbers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STAGE=${STAGE:-all}
REGIONS=${REGIONS:-HN,TH,AB}
WEIGHT=${WEIGHT:-0.7}
STEPS=${STEPS:-2500}
THREADS=${THREADS:-2}
INIT=${INIT-model_weights/l1.onnx}
SCHEDULE=${SCHEDULE:-cosine}
VAL_EVERY=${VAL_EVERY:-500}
STUDENT=${STUDENT:-student}
PLAIN=${PLAIN:-1}
FLIP=${FLIP:-0}
OUT=${OUT:-runs/distil}
ROOT=${ROOT:-data/distil_l1_folds}  # train: the student's data root (data/phantoms_final: no teacher)
SPLIT=configs/splits/phantoms_final.json
regions_toml="[\"${REGIONS//,/\",\"}\"]"

if [[ $STAGE == all || $STAGE == teacher ]]; then
  SCT_THREADS=$THREADS $PY -m training.distil --teacher l1_folds --data data/phantoms_final --split $SPLIT \
    --out $ROOT --regions "$REGIONS" --teacher-weight "$WEIGHT" --no-progress
fi

train() {  # $1 = run folder, $2 = data root
  mkdir -p "$OUT"
  local init=()
  if [[ -n $INIT ]]; then init=(--set "run.init_from=$INIT"); fi
  $PY -m training.train --config configs/drifting.toml --set model.kind=l1 --set optim.cpu_bf16=true \
    --set optim.lr_schedule="$SCHEDULE" --set run.threads="$THREADS" --set run.seed=0 --set optim.steps="$STEPS" \
    --set run.val_every="$VAL_EVERY" --set run.checkpoint_every="$VAL_EVERY" "${init[@]}" \
    --set augment.flip_probability="$FLIP" \
    --set "data.root=$2" --set data.split=$SPLIT --set "data.regions=$regions_toml" --set "run.out_dir=$1" \
    >"$1.log" 2>&1
}

if [[ $STAGE == all || $STAGE == train ]]; then
  train "$OUT/$STUDENT" $ROOT
  if [[ $PLAIN == 1 ]]; then train "$OUT/plain" data/phantoms_final; fi
fi

if [[ $STAGE == all || $STAGE == eval ]]; then
  export SCT_THREADS=$THREADS
  MODELS=${MODELS:-l1_folds,l1,l1_student,l1_plain_ft}
  extras=()  # every run folder of OUT with a best.pt, as l1_<folder> (student -> l1_student, plain -> l1_plain_ft)
  for run in "$OUT"/*/best.pt; do
    name=$(basename "$(dirname "$run")")
    [[ $name == plain ]] && name=plain_ft
    extras+=(--extra "l1_$name=$run")
  done
  $PY experiments/make_eval_manifest.py --out "$OUT/eval/manifest.json" "${extras[@]}"
  cases=$($PY -c "import json,sys; s=json.load(open('$SPLIT'))['cases']; r=set('$REGIONS'.split(','));
print(','.join(sorted(c for c, e in s.items() if e['split'] == 'test' and e['region'] in r)))")
  $PY benchmarks/compare_models.py --data data/phantoms_final --cases "$cases" --dosimetry \
    --models "$MODELS" --manifest "$OUT/eval/manifest.json" --out "$OUT/test"
  mkdir -p docs/results/distillation
  cp "$OUT/test/comparison.json" docs/results/distillation/test_comparison.json
fi
