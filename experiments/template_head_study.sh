#!/usr/bin/env bash
# Template-derived heads (issue 32): fine-tune the shipped l1 network on the phantom mix plus template heads, and
# the same steps on the phantom mix alone (the equal-budget comparator), side by side, one thread each.
#   STAGE=data | train | eval | all (recipe 1, default) | train23 | eval23 (recipes 2 and 3); STEPS (default 2500);
#   THREADS per run (default 1); PY (default .venv/bin/python)
#   eval: exports both runs' last checkpoints into runs/eval_template/manifest.json, then scores the phantom test split,
#   the held-out template heads (compare_models) and the real-MR panel, each in one run with today's models beside them.
# Data: data/phantoms_final (the shipped split's phantoms) and data/template_heads (40 template heads, seed 0),
# hard-linked into data/mix_template; configs/splits/template_mix.json assigns them (experiments/make_template_split.py).
# Both runs: L1 objective, initialised from model_weights/l1.onnx, cosine rate, bf16 autocast, physics-level MR
# randomisation on half the crops; they differ only in the data root. Results: docs/studies/template_heads.md.
# Recipes 2 and 3 (train23 / eval23; no MR randomisation, the template heads at a fixed share of the crops through
# data.extra_root): 2 = every region, template heads at a third of the crops; 3 = a head specialist (HN only), the
# template heads at half the crops and the analytic HN at the other half. Both are scored as they would ship: the
# best validation checkpoint with flip TTA (`<name>_tta` entries).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STAGE=${STAGE:-all}
STEPS=${STEPS:-2500}
MODELS=${MODELS:-l1,l1_template,l1_phantom_ft}  # scored on the test splits (l1_folds: docs/studies/test_split.md)
PANEL=${PANEL:-l1_folds,l1,ldm,l1_smooth_hn,l1_template,l1_phantom_ft}
THREADS=${THREADS:-1}
OUT=${OUT:-runs}

if [[ $STAGE == all || $STAGE == data ]]; then
  [[ -f data/phantoms_final/phantoms.json ]] ||
    $PY -m phantoms --out data/phantoms_final --regions HN,TH,AB --cases 15 --seed 0 --no-progress
  [[ -f data/template_heads/phantoms.json ]] ||
    $PY -m phantoms --out data/template_heads --anatomy template --regions HN --cases 40 --seed 0 --no-progress --overview
  $PY experiments/make_template_split.py --heads data/template_heads --out configs/splits/template_mix.json
  if [[ ! -d data/mix_template ]]; then
    mkdir -p data/mix_template
    cp -al data/phantoms_final data/mix_template/final
    cp -al data/template_heads data/mix_template/heads
  fi
fi

train() {  # $1 = run folder, $2 = data root, then extra --set arguments
  local out=$1 root=$2
  shift 2
  mkdir -p "$(dirname "$out")"
  $PY -m training.train --config configs/drifting.toml --set model.kind=l1 \
    --set optim.cpu_bf16=true --set optim.lr_schedule=cosine --set run.threads=$THREADS --set run.seed=0 \
    --set optim.steps=$STEPS --set run.val_every=1000 --set run.checkpoint_every=500 \
    --set run.init_from=model_weights/l1.onnx --set "data.root=$root" --set data.split=configs/splits/template_mix.json \
    --set "run.out_dir=$out" "$@" ${RESUME:+--resume} >>"$out.log" 2>&1
}
RANDOMISED=(--set data.mr_randomisation=physics --set data.randomise_probability=0.5)

if [[ $STAGE == all || $STAGE == train ]]; then
  train "$OUT/template_mix" data/mix_template "${RANDOMISED[@]}" &
  train "$OUT/phantom_mix" data/phantoms_final "${RANDOMISED[@]}" &
  wait
fi

if [[ $STAGE == train23 ]]; then
  train "$OUT/template_third" data/phantoms_final \
    --set data.extra_root=data/template_heads --set data.extra_share=0.333 &
  train "$OUT/template_hn" data/phantoms_final --set 'data.regions=["HN"]' \
    --set data.extra_root=data/template_heads --set data.extra_share=0.5 &
  wait
fi

if [[ $STAGE == all || $STAGE == eval ]]; then
  export SCT_THREADS=${SCT_THREADS:-2}
  $PY experiments/make_eval_manifest.py --out runs/eval_template/manifest.json \
    --extra l1_template=$OUT/template_mix/last.pt --extra l1_phantom_ft=$OUT/phantom_mix/last.pt
  $PY benchmarks/compare_models.py --data data/phantoms_final --models "$MODELS" --dosimetry \
    --manifest runs/eval_template/manifest.json --out runs/eval_template/test_phantoms
  $PY benchmarks/compare_models.py --data data/template_heads --split configs/splits/template_mix.json \
    --models "$MODELS" --dosimetry --manifest runs/eval_template/manifest.json --out runs/eval_template/test_template_heads
  $PY experiments/real_mr_panel.py --models "$PANEL" --manifest runs/eval_template/manifest.json \
    --out runs/eval_template/panel --log-level WARNING
  mkdir -p docs/results/template_heads
  cp runs/eval_template/test_phantoms/comparison.json docs/results/template_heads/test_phantoms.json
  cp runs/eval_template/test_template_heads/comparison.json docs/results/template_heads/test_template_heads.json
  cp runs/eval_template/panel/report.json docs/results/template_heads/panel.json
fi

if [[ $STAGE == eval23 ]]; then
  export SCT_THREADS=${SCT_THREADS:-2}
  E=runs/eval_template23
  $PY experiments/make_eval_manifest.py --out $E/manifest.json --tta \
    --extra l1_template=$OUT/template_mix/last.pt \
    --extra l1_template_third=$OUT/template_third/best.pt --extra l1_template_hn=$OUT/template_hn/best.pt
  M23=l1,l1_template_third_tta,l1_template_hn_tta  # l1_folds on the phantom test split: docs/studies/test_split.md
  $PY benchmarks/compare_models.py --data data/phantoms_final --models "$M23" --dosimetry \
    --manifest $E/manifest.json --out $E/test_phantoms
  $PY benchmarks/compare_models.py --data data/template_heads --split configs/splits/template_mix.json \
    --models "$M23" --dosimetry --manifest $E/manifest.json --out $E/test_template_heads
  $PY experiments/real_mr_panel.py --models "l1_folds,l1_template,$M23" --manifest $E/manifest.json \
    --out $E/panel --log-level WARNING
  mkdir -p docs/results/template_heads
  cp $E/test_phantoms/comparison.json docs/results/template_heads/recipes23_test_phantoms.json
  cp $E/test_template_heads/comparison.json docs/results/template_heads/recipes23_test_template_heads.json
  cp $E/panel/report.json docs/results/template_heads/recipes23_panel.json
fi
