#!/usr/bin/env bash
# The recipe that reaches the real-MR goals (docs/studies/real_mr_transfer.md, recipe 11): a weight average ("soup") of
# fine-tunes of the shipped l1 on head-and-neck phantoms, four runs per seed, over two or more seeds:
#   {0.3-1.5 mm, 0.1-0.8 mm brain CSF rims} x {30 %, 40 % of the crops randomised and blurred},
# each 5000 steps with the cosine rate and FAINT=0.83 (experiments/smooth_mr_experiment.sh), soup of the best
# (validation-chosen) checkpoints. Runs whose best.pt exists are skipped, so a stopped recipe resumes run by run.
#   SEEDS: the seeds (default "0 1": eight runs); PARALLEL: runs at once, one thread each (default 2, one per core;
#   about 22 min a pair with bf16 on this 2-core EPYC); BF16: bfloat16 autocast (default true; false without
#   AVX512-BF16); COMPARATOR=true also trains the equal-recipe runs without randomisation (RANDOMISATION=off,
#   seeds 0 and 1 of both phantom sets) and their soup, the "without randomisation" side of the 5 % goal;
#   OUT: where the runs and soups go (default runs); THIN_DATA / RIM9_DATA: the two phantom sets (defaults
#   data/phantoms_var5_hn, data/phantoms_var9_hn; made when missing). Then score with experiments/real_mr_compare.sh, e.g.
#   MEASURE=real,test PREPARED=runs/real_mr_csf/case MODELS=water TAG=mine \
#     EXTRAS="soup=runs/soups/real_mr_s01.pt sharp=runs/soups/real_mr_sharp.pt" bash experiments/real_mr_compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0 1}
PARALLEL=${PARALLEL:-2}
BF16=${BF16:-true}
COMPARATOR=${COMPARATOR:-false}
OUT=${OUT:-runs}

THIN_DATA=${THIN_DATA:-data/phantoms_var5_hn}  # HN phantoms with 0.3-1.5 mm CSF rims (made here when missing)
RIM9_DATA=${RIM9_DATA:-data/phantoms_var9_hn}  # and with 0.1-0.8 mm rims
declare -A RIMS=(["$THIN_DATA"]=0.3,1.5 ["$RIM9_DATA"]=0.1,0.8)
declare -A SHORT=(["$THIN_DATA"]=thin ["$RIM9_DATA"]=rim9)
for data in "$THIN_DATA" "$RIM9_DATA"; do
  [[ -f $data/phantoms.json ]] || $PY -m phantoms --out "$data" --regions HN --cases 12 --seed 0 --variability \
    --csf-rim-mm "${RIMS[$data]}" --no-progress
done

suffix() { [[ $1 == 0 ]] && echo "" || echo "_s$1"; }
jobs_list=()  # "DATA PROBABILITY SEED OUTDIR" per run; PROBABILITY "off" is a comparator run
for seed in $SEEDS; do
  for data in "$THIN_DATA" "$RIM9_DATA"; do
    for p in 30 40; do jobs_list+=("$data 0.$p $seed $OUT/${SHORT[$data]}_p${p}_cos$(suffix "$seed")"); done
  done
done
if [[ $COMPARATOR == true ]]; then
  for data in "$THIN_DATA" "$RIM9_DATA"; do
    for seed in 0 1; do jobs_list+=("$data off $seed $OUT/${SHORT[$data]}_sharp_cos$(suffix "$seed")"); done
  done
fi

mkdir -p "$OUT"  # each run logs to $OUT/NAME.log beside its folder
running=0
for job in "${jobs_list[@]}"; do
  read -r data p seed dir <<<"$job"
  if [[ -f $dir/best.pt ]]; then
    echo "have $dir/best.pt"
    continue
  fi
  echo "training $dir (log: $dir.log)"
  settings=(PROBABILITY="$p" FAINT=0.83)
  [[ $p == off ]] && settings=(RANDOMISATION=off)  # a comparator run: the same recipe without randomisation
  env "${settings[@]}" BF16="$BF16" DATA="$data" STEPS=5000 THREADS=1 SCHEDULE=cosine SEED="$seed" OUT="$dir" \
    STAGE=train PY="$PY" bash experiments/smooth_mr_experiment.sh &
  running=$((running + 1))
  if ((running >= PARALLEL)); then
    wait -n
    running=$((running - 1))
  fi
done
wait

mkdir -p "$OUT/soups"
members=() sharp=()
for job in "${jobs_list[@]}"; do
  read -r data p seed dir <<<"$job"
  if [[ $p == off ]]; then sharp+=("$dir/best.pt"); else members+=("$dir/best.pt"); fi
done
$PY -m training.average_checkpoints --out "$OUT/soups/real_mr_s${SEEDS// /}.pt" "${members[@]}"
if ((${#sharp[@]})); then
  $PY -m training.average_checkpoints --out "$OUT/soups/real_mr_sharp.pt" "${sharp[@]}"
fi
