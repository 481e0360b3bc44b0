#!/usr/bin/env bash
# The equal-budget comparisons of issue 33 on the phantoms (test split untouched; README "Training on the real
# release"): does the anatomy-aware loss help, does drift in its features help, and is M worth its cost on a CPU?
#
#   s_l1       preset S fine-tuned from the shipped l1.onnx, STEPS steps, L1 only                 (the reference)
#   s_anatomy  the same + LAMBDA_ANATOMY x the anatomy loss (training/anatomy.py)
#   s_drift    the same as s_l1 + drift in the anatomy network's features (levels 1-3, paired positives: the
#              DriftDecode recipe; lambda_drift 1 next to lambda_l1 10), from step DRIFT_START on
#   s_scratch  preset S from scratch, L1, for BUDGET seconds of training steps (default: what s_l1's steps took)
#   m_scratch  preset M from scratch, L1, for the same BUDGET seconds (equal wall-clock on this CPU)
# then every model (and the shipped l1) through process.py on the 9 test cases with the dosimetry metrics
# (benchmarks/compare_models.py: MAE, MS-SSIM, bone-edge sharpness, WEPL, bone Dice) and on the real head
# (experiments/real_mr_check.py), and the ship rule below applied to the numbers (OUT/verdict.md).
#
# Ship rule (written before any number): a variant (s_drift, s_anatomy) beats s_l1 when its test MAE is no worse
# than s_l1's by more than 2 % AND it is better on at least two of MS-SSIM (higher), bone-edge sharpness (closer to
# 1, the CT's own), WEPL MAE (lower) and bone Dice at 250 HU (higher). If s_drift beats s_l1 the drifting objective
# becomes the primary's objective; otherwise L1 (with the anatomy loss if s_anatomy beats s_l1) is the recipe.
#
#   bash experiments/anatomy_loss_study.sh                   # everything; runs with a best.pt are not trained again
#   STAGE=compare bash experiments/anatomy_loss_study.sh     # only the scoring (train, compare or all)
# Settings: DATA (data/phantoms_final, generated when missing), OUT (runs/anatomy_study), STEPS (3000), THREADS (2),
# BF16 (false; true only where lscpu lists avx512_bf16), LAMBDA_ANATOMY, DRIFT_START (0), BUDGET (seconds),
# SCRATCH (1; 0 leaves out the two from-scratch runs, S vs M at equal wall-clock), VAL_EVERY (500: steps between
# validations; a large value validates only at the end), MODELS (the runs to train and compare, default all five;
# e.g. MODELS="s_scratch m_scratch" BUDGET=900 for S vs M alone).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${PY:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; elif [[ -n ${VIRTUAL_ENV:-} ]]; then PY=python; else PY=python3; fi
fi
DATA=${DATA:-data/phantoms_final}
OUT=${OUT:-runs/anatomy_study}
STEPS=${STEPS:-3000}
THREADS=${THREADS:-2}
BF16=${BF16:-false}
LAMBDA_ANATOMY=${LAMBDA_ANATOMY:-1.0}
DRIFT_START=${DRIFT_START:-0}
STAGE=${STAGE:-all}
SCRATCH=${SCRATCH:-1}
VAL_EVERY=${VAL_EVERY:-500}
if [[ -n ${MODELS:-} ]]; then
  read -r -a models <<<"$MODELS"
else
  models=(s_l1 s_anatomy s_drift)
  [[ $SCRATCH == 1 ]] && models+=(s_scratch m_scratch)
fi
ANATOMY=$OUT/anatomy/tissue_net.pt
export SCT_THREADS=$THREADS
mkdir -p "$OUT"

if [[ ! -f $DATA/phantoms.json ]]; then
  $PY -m phantoms --out "$DATA" --regions HN,TH,AB --cases 15 --seed 0 --no-progress  # the committed split's cases
fi
common=(--config configs/drifting.toml --set model.kind=l1 --set "data.root=$DATA" --set "run.threads=$THREADS"
  --set "optim.cpu_bf16=$BF16" --set optim.lr_schedule=cosine --set "run.val_every=$VAL_EVERY")
fine_tune=(--set "optim.steps=$STEPS" --set run.init_from=model_weights/l1.onnx)

wanted() { [[ " ${models[*]} " == *" $1 "* ]]; }  # is run $1 among MODELS

train() {  # name, extra arguments: skipped when OUT/name/best.pt exists (a stopped study resumes) or not in MODELS
  local name=$1
  shift
  wanted "$name" || return 0
  if [[ -f $OUT/$name/best.pt ]]; then
    echo "have $OUT/$name/best.pt"
    return
  fi
  echo "training $name"
  nice -n 15 $PY -m training.train "${common[@]}" --set "run.out_dir=$OUT/$name" "$@" >"$OUT/$name.log" 2>&1
}

if [[ $STAGE == all || $STAGE == train ]]; then
  if [[ ! -f $ANATOMY ]] && { wanted s_anatomy || wanted s_drift; }; then  # the tissue network, for the runs using it
    nice -n 15 $PY -m training.anatomy --config configs/drifting.toml --set "data.root=$DATA" \
      --out "$ANATOMY" --threads "$THREADS" >"$OUT/anatomy.log" 2>&1
  fi
  train s_l1 "${fine_tune[@]}"
  train s_anatomy "${fine_tune[@]}" --set "loss.lambda_anatomy=$LAMBDA_ANATOMY" --set "loss.anatomy_checkpoint=$ANATOMY"
  train s_drift "${fine_tune[@]}" --set model.kind=drifting --set loss.encoder=anatomy --set 'loss.features=[]' \
    --set 'loss.encoder_layers=[1,2,3]' --set loss.positives=paired --set "loss.anatomy_checkpoint=$ANATOMY" \
    --set "loss.drift_start=$DRIFT_START"
  if wanted s_scratch || wanted m_scratch; then
    BUDGET=${BUDGET:-$($PY -c "import json; print(json.load(open('$OUT/s_l1/summary.json'))['train_seconds'])")}
    echo "equal wall-clock budget: $BUDGET s of training steps"
    train s_scratch --set optim.steps=1000000 --set "run.max_train_seconds=$BUDGET"
    train m_scratch --config configs/presets/M.toml --set optim.steps=1000000 --set "run.max_train_seconds=$BUDGET"
  fi
fi

if [[ $STAGE == all || $STAGE == compare ]]; then
  extras=()
  for name in "${models[@]}"; do extras+=(--extra "$name=$OUT/$name/best.pt"); done
  $PY experiments/make_eval_manifest.py --out "$OUT/eval/manifest.json" "${extras[@]}"
  list=l1$(printf ',%s' "${models[@]}")
  nice -n 15 $PY benchmarks/compare_models.py --data "$DATA" --models "$list" --manifest "$OUT/eval/manifest.json" \
    --out "$OUT/compare" --dosimetry
  nice -n 15 $PY experiments/real_mr_check.py --models "$list" --manifest "$OUT/eval/manifest.json" --out "$OUT/real_mr"
  $PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
summary = json.loads((out / "compare" / "comparison.json").read_text())
train = {name: json.loads((out / name / "summary.json").read_text()) for name in summary if (out / name).is_dir()}
keys = ("mae", "ms_ssim", "bone_edge_sharpness", "wepl_mae_mm", "bone_dice_250hu")


def value(model, key):
    return summary[model]["bone_edge_sharpness"] if key == "bone_edge_sharpness" else summary[model]["overall"][key]


def better(key, a, b):  # is a better than b
    if key == "bone_edge_sharpness":
        return abs(a - 1.0) < abs(b - 1.0)
    return a > b if key in ("ms_ssim", "bone_dice_250hu") else a < b


lines = ["| model | steps | train s | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
for model in summary:
    steps = train.get(model, {}).get("steps", "shipped")
    seconds = train.get(model, {}).get("train_seconds", "")
    lines.append(f"| {model} | {steps} | {seconds} | " + " | ".join(f"{value(model, k):.4g}" for k in keys) + " |")
if all(m in summary for m in ("s_l1", "s_anatomy", "s_drift")):  # the ship rule needs all three objectives
    verdicts = {}
    for variant in ("s_anatomy", "s_drift"):
        mae_ok = value(variant, "mae") <= 1.02 * value("s_l1", "mae")
        wins = [k for k in keys[1:] if better(k, value(variant, k), value("s_l1", k))]
        verdicts[variant] = mae_ok and len(wins) >= 2
        lines.append(
            f"\n{variant} vs s_l1: MAE {'within' if mae_ok else 'worse than'} +2 %, better on {wins or 'nothing'} "
            f"-> {'beats' if verdicts[variant] else 'does not beat'} s_l1"
        )
    recipe = "the drifting objective (L1 + drift in anatomy features)" if verdicts["s_drift"] else (
        "L1 + the anatomy loss" if verdicts["s_anatomy"] else "plain L1"
    )
    lines.append(f"\nShip rule -> the primary's objective: {recipe}.")
if "m_scratch" in summary and "s_scratch" in summary:
    m, s = value("m_scratch", "mae"), value("s_scratch", "mae")
    lines.append(f"S vs M at equal wall-clock (from scratch): MAE {s:.1f} vs {m:.1f} HU")
(out / "verdict.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
fi
