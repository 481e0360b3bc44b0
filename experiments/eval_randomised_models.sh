#!/usr/bin/env bash
# The randomised fine-tunes (runs/ft_rand, runs/ft_blur) against the shipped l1: real head, blur robustness, test split.
set -euo pipefail
cd "$(dirname "$0")/.."
export SCT_THREADS=1
.venv/bin/python experiments/make_eval_manifest.py --out runs/ft_blur/eval/manifest.json \
  --extra l1_rand=runs/ft_rand/best.pt --extra l1_blur=runs/ft_blur/best.pt
.venv/bin/python experiments/real_mr_check.py --models l1,l1_rand,l1_blur --manifest runs/ft_blur/eval/manifest.json --out runs/real_mr_blur
.venv/bin/python experiments/blur_robustness.py --models l1,l1_rand,l1_blur --manifest runs/ft_blur/eval/manifest.json \
  --cases 1HND004,1THA007,1ABB008 --sigmas 0,1.5,3 --out runs/ft_blur/blur_robustness.json
.venv/bin/python benchmarks/compare_models.py --data data/phantoms_final --manifest runs/ft_blur/eval/manifest.json \
  --models l1,l1_rand,l1_blur --out runs/ft_blur/compare
