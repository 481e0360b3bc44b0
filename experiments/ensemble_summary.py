"""The k-fold evidence from one compare_models.py run: ensemble and flip TTA against the mean single fold.

    python experiments/ensemble_summary.py --comparison runs/kfold/compare/comparison.json \
        --folds l1_fold0,l1_fold1,l1_fold2 --out docs/results/folds_and_tta/test_comparison_kfold.json

For each other model of the comparison (l1_folds, l1_folds_tta, l1, l1_tta, routes, ...) it reports the MAE
against the mean of the single folds (and in percent), the MAE difference paired per case against the best single
fold (mean, standard error), and the time per case as a multiple of the mean single fold's. The noise between
folds is the standard deviation of the single folds' test MAE: an ensemble "wins by more than the noise" when its
MAE is lower than the mean fold's by more than that. Writes the comparison itself plus this summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from compare_models import paired_difference  # noqa: E402

LOG = logging.getLogger("ensemble_summary")


def summarise(comparison: dict[str, dict], folds: list[str]) -> dict:
    """Fold statistics and, per other model, its gain over the mean fold, paired difference and relative time."""
    fold_mae = np.array([comparison[f]["overall"]["mae"] for f in folds])
    fold_seconds = float(np.mean([comparison[f]["seconds_per_case"] for f in folds]))
    best_fold = folds[int(fold_mae.argmin())]
    mean_mae = float(fold_mae.mean())
    noise = float(fold_mae.std(ddof=1))
    models = {}
    for name, entry in comparison.items():
        if name in folds:
            continue
        mae = entry["overall"]["mae"]
        models[name] = {
            "mae": mae,
            "mae_change_vs_mean_fold_percent": 100.0 * (mae - mean_mae) / mean_mae,
            "wins_by_more_than_fold_noise": bool(mean_mae - mae > noise),
            "paired_vs_best_fold": paired_difference(comparison[best_fold]["case_mae"], entry["case_mae"]),
            "time_vs_mean_fold": entry["seconds_per_case"] / fold_seconds,
        }
    return {
        "folds": {
            "names": folds,
            "mae": fold_mae.tolist(),
            "mean_mae": mean_mae,
            "std_mae": noise,
            "best": best_fold,
            "seconds_per_case": fold_seconds,
        },
        "models": models,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comparison", type=Path, required=True, help="comparison.json of compare_models.py")
    parser.add_argument("--folds", required=True, help="comma-separated names of the single fold models")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (the comparison plus the summary)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    comparison = json.loads(args.comparison.read_text())
    folds = [f for f in args.folds.split(",") if f]
    missing = [f for f in folds if f not in comparison]
    if len(folds) < 2 or missing:
        parser.error(f"need two or more fold models present in the comparison (missing: {missing})")
    summary = summarise(comparison, folds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"comparison": comparison, "summary": summary}, indent=2) + "\n")
    stats = summary["folds"]
    LOG.info(
        "single folds: MAE %.2f +- %.2f HU (mean +- SD), %.1f s per case",
        stats["mean_mae"],
        stats["std_mae"],
        stats["seconds_per_case"],
    )
    for name, row in summary["models"].items():
        paired = row["paired_vs_best_fold"]
        LOG.info(
            "%s: MAE %.2f HU (%+.1f %% vs mean fold; beyond fold noise: %s), %+.2f +- %.2f HU paired vs %s, %.1fx time",
            name,
            row["mae"],
            row["mae_change_vs_mean_fold_percent"],
            row["wins_by_more_than_fold_noise"],
            paired["mean"],
            paired["standard_error"],
            stats["best"],
            row["time_vs_mean_fold"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
