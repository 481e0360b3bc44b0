#!/usr/bin/env bash
# Rehearse the real-release recipe (configs/synthrad2025_task1.toml, README "Training on the real release") end to end
# on a CPU, on phantoms of the release's image sizes: generate CASES cases per region in the release layout, split
# them (one test case per region, two folds over the rest), build the preprocessing cache, train the anatomy network,
# train fold 0 of the L preset for STEPS steps (the recipe with CPU overrides: small crops and batches, no AMP, no
# loader workers), export it into a fresh manifest, run process.py on the test cases and score them. Exit 0 when
# every stage did; each stage's wall time is printed, and the total at the end.
#   bash scripts/rehearse_release.sh                       # WORK=runs/rehearse_release CASES=3 STEPS=3
# The numbers it prints score a network trained for a few steps: they check the plumbing, not the recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${PY:-} ]]; then  # the repository's venv, else an activated one, else the system's python3
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; elif [[ -n ${VIRTUAL_ENV:-} ]]; then PY=python; else PY=python3; fi
fi
WORK=${WORK:-runs/rehearse_release}
CASES=${CASES:-3}  # 3: two per region for the folds (fold 0 validates one per region), one to test
STEPS=${STEPS:-3}
CONFIG=configs/synthrad2025_task1.toml
export SCT_THREADS=${SCT_THREADS:-2}
started=$SECONDS
stage() { echo "[rehearse +$((SECONDS - started)) s] $*"; }

rm -rf "$WORK"
mkdir -p "$WORK/weights"
CPU=(
  --set "data.root=$WORK/release" --set "data.split=$WORK/split.json" --set "data.cache=$WORK/cache"
  --set data.cache_workers=1 --set data.crop=128 --set data.samples_per_epoch=8 --set optim.batch_size=2
  --set "optim.steps=$STEPS" --set optim.amp=false --set run.workers=0 --set run.threads=2
  --set "run.val_every=$STEPS" --set "run.checkpoint_every=$STEPS" --set run.log_every=1
  --set "run.out_dir=$WORK/runs" --set "loss.anatomy_checkpoint=$WORK/anatomy.pt"
)

stage "phantoms: $CASES cases per region at the release's sizes"
$PY -m phantoms --out "$WORK/release" --regions HN,TH,AB --cases "$CASES" --seed 0 --no-progress
stage "split: one test case per region, two folds over the others"
$PY -m training.splits create --data "$WORK/release" --out "$WORK/split_plain.json" --val-per-region 0 \
  --test-per-region 1 --seed 0
$PY -m training.splits kfold --split "$WORK/split_plain.json" --folds 2 --seed 0 --out "$WORK/split.json"
stage "preprocessing cache"
$PY -m training.cache --data "$WORK/release" --cache "$WORK/cache" --config "$CONFIG" --workers 1
stage "anatomy network (fold 0's training CTs)"
$PY -m training.anatomy --config "$CONFIG" "${CPU[@]}" --fold 0 --steps 20 --batch-size 4 --crop 96
stage "L preset, fold 0, $STEPS steps"
$PY -m training.train --config "$CONFIG" "${CPU[@]}" --fold 0
$PY -m training.summary --config "$CONFIG"
stage "export into a fresh manifest"
$PY - "$WORK/weights/manifest.json" <<'EOF'
import json, sys
shipped = json.load(open("model_weights/manifest.json"))
routes = {code: {"model": "water", "fallback": None} for code in ("HN", "TH", "AB")}
manifest = {"schema_version": 1, "defaults": shipped["defaults"], "models": {"water": {"kind": "water"}}, "regions": routes}
json.dump(manifest, open(sys.argv[1], "w"), indent=2)
EOF
$PY -m training.export --checkpoint "$WORK/runs/fold_0/best.pt" --name release_L --manifest "$WORK/weights/manifest.json" \
  --regions HN,TH,AB --description "rehearsal: $STEPS CPU steps"
stage "process.py on the test cases (MR and mask only)"
$PY - "$WORK" <<'EOF'
import json, shutil, sys
from pathlib import Path
work = Path(sys.argv[1])
split = json.load(open(work / "split.json"))["cases"]
for case_id, entry in split.items():
    if entry["split"] == "test":
        source = next((work / "release" / "Task1").glob(f"*/{case_id}"))
        target = work / "test_input" / "Task1" / source.parent.name / case_id
        target.mkdir(parents=True)
        for name in ("mr.mha", "mask.mha"):
            shutil.copy(source / name, target / name)
EOF
$PY process.py --input "$WORK/test_input" --output "$WORK/output" --manifest "$WORK/weights/manifest.json" --no-progress
stage "evaluation"
$PY -m evaluation --pred "$WORK/output" --gt "$WORK/release" --out "$WORK/report" --no-plots --no-progress
$PY - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
results = json.load(open(work / "output" / "results.json"))
assert len(results) == 3 and all(r["outputs"] and r.get("model") == "release_L" for r in results), results
metrics = json.load(open(work / "report" / "metrics.json"))
assert len(metrics["results"]) == 3, metrics["results"]
print({name: round(metrics["aggregates"][name]["mean"], 3) for name in ("mae", "psnr", "ms_ssim")})
EOF
stage "done: rehearsal of the release recipe passed in $((SECONDS - started)) s"
