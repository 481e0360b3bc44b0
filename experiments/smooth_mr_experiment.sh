#!/usr/bin/env bash
# Real-MR recipes 4-11 (docs/studies/real_mr_transfer.md): is smoothness what hides the real skull?
# The averaged real head is far smoother than any phantom (its scalp edge rises over about 5 voxels), and the shipped
# l1's bone recall collapses on blurred phantoms. So: fine-tune the shipped l1 on head-and-neck phantoms with varying
# skulls (a third of them marrow-free shells), every crop randomised at the `physics` level with a blur floor
# (in-plane sigma 1.5-3.5 px, 0.3-1 slice across), then score the real head and blurred test-split HN phantoms.
#   STAGE=train | eval | all (default); about 35 minutes on this 2-core CPU with nothing else running.
#   PROBABILITY: share of crops randomised and blurred (default 1.0: every crop smooth); the mixed variant is
#   PROBABILITY=0.5 OUT=runs/smooth_mix_hn NAME=l1_smooth_mix TAG=smooth_mix bash experiments/smooth_mr_experiment.sh
#   DATA: the variability phantoms (generated when missing); STEPS: fine-tuning steps; THREADS: training threads;
#   RANDOMISATION: the on-the-fly level (off gives the equal-budget comparator without randomisation or blur);
#   BF16: bfloat16 autocast (true where the CPU has AVX512-BF16: about 1.6x the fp32 steps per second);
#   FAINT: share of randomised crops whose bone fades towards the tissue around it (data.faint_bone_probability;
#   recipe 6);
#   CONFIG: one more --config file, e.g. histogram landmarks (configs/landmarks/hn_var3.toml, recipe 7);
#   MAXBLUR: the largest in-plane blur sigma of the randomised crops in pixels (default 3.5; the floor stays 1.5);
#   KEEP: true keeps each randomised crop's in-body histogram (data.keep_histogram; with CONFIG's landmarks);
#   SCHEDULE: the learning-rate schedule, constant (default) or cosine (optim.lr_schedule: down to 5 % of the rate
#   at STEPS; recipe 8);
#   SEED: run.seed (crop draws, randomisation and the drifting loss's noise; the split file fixes the cases);
#   RESUME=1 continues OUT/last.pt up to STEPS (with the constant rate that is one longer run; cosine reshapes).
#   PY: the Python to run (default .venv/bin/python; experiments/real_mr_soup.sh passes its own).
#   Recipe 5 (brains with varying CSF spaces) runs two of these side by side:
#   BF16=true DATA=data/phantoms_var2_hn STEPS=5000 THREADS=1 PROBABILITY=0.5 OUT=runs/csf_mix_hn NAME=l1_csf_mix TAG=csf_mix
#   BF16=true DATA=data/phantoms_var2_hn STEPS=5000 THREADS=1 RANDOMISATION=off OUT=runs/csf_sharp_hn NAME=l1_csf_sharp TAG=csf_sharp
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/smooth_hn}
NAME=${NAME:-l1_smooth}
TAG=${TAG:-smooth}
PROBABILITY=${PROBABILITY:-1.0}
STAGE=${STAGE:-all}
DATA=${DATA:-data/phantoms_var_hn}
STEPS=${STEPS:-4000}
THREADS=${THREADS:-2}
RANDOMISATION=${RANDOMISATION:-physics}
BF16=${BF16:-false}
FAINT=${FAINT:-0.0}
CONFIG=${CONFIG:-}
KEEP=${KEEP:-false}
MAXBLUR=${MAXBLUR:-3.5}
SCHEDULE=${SCHEDULE:-constant}
SEED=${SEED:-0}
export SCT_THREADS=${SCT_THREADS:-2}

if [[ $STAGE == all || $STAGE == train ]]; then
  [[ -f $DATA/phantoms.json ]] ||
    $PY -m phantoms --out "$DATA" --regions HN --cases 12 --seed 0 --variability --no-progress
  $PY -m training.train --config configs/drifting.toml --config configs/regions/HN.toml ${CONFIG:+--config "$CONFIG"} --set model.kind=l1 \
    --set optim.cpu_bf16=$BF16 --set optim.lr_schedule=$SCHEDULE --set run.threads=$THREADS --set run.seed=$SEED --set optim.steps=$STEPS --set run.val_every=1000 \
    --set run.init_from=model_weights/l1.onnx --set "data.root=$DATA" \
    --set data.mr_randomisation=$RANDOMISATION --set data.randomise_probability=$PROBABILITY \
    --set data.faint_bone_probability=$FAINT --set data.keep_histogram=$KEEP \
    --set data.min_blur_px=1.5 --set data.max_blur_px=$MAXBLUR --set data.min_slice_blur=0.3 --set data.max_slice_blur=1.0 \
    --set "run.out_dir=$OUT" ${RESUME:+--resume} >>"$OUT.log" 2>&1
fi

if [[ $STAGE == all || $STAGE == eval ]]; then  # the real head and the blurred HN test cases, one run each
  MODELS=l1 EXTRAS="$NAME=$OUT/best.pt ${NAME}_last=$OUT/last.pt" TAG=$TAG PY=$PY bash experiments/real_mr_compare.sh
fi
