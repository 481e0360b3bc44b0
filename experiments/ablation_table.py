"""The equal-budget ablation in one table: validation curves (which chose), test scores (which report), ||V||^2.

    python experiments/ablation_table.py --runs l1=runs/cmp/l1 pixel=runs/cmp/pixel \
        feature_bank=runs/cmp/feature_bank feature_paired=runs/cmp/feature_paired \
        --test runs/compare_test/a/comparison.json runs/compare_test/b/comparison.json \
        --names l1=l1_1500 pixel=pixel_1500 feature_bank=feature_bank_1500 feature_paired=feature_paired_1500 \
        --out docs/results/drifting_vs_l1/ablation_equal_budget.json

Reads each run's log.csv (validation MAE / MS-SSIM at every validation step; the raw ||V||^2 at tau = 0.2 of each
feature, first and last logged value) and the test-split comparison.json files of benchmarks/compare_models.py.
Prints a Markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def _pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="label=run folder")
    parser.add_argument("--test", nargs="+", default=[], help="comparison.json files (test split)")
    parser.add_argument("--names", nargs="*", default=[], help="label=model name in the comparison files")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs, names = _pairs(args.runs), _pairs(args.names)
    test: dict[str, dict] = {}
    for path in args.test:
        test.update(json.loads(Path(path).read_text()))
    table = {}
    for label, folder in runs.items():
        rows = list(csv.DictReader(open(Path(folder) / "log.csv")))
        validation = {
            int(r["step"]): {"mae": float(r["val_mae"]), "ms_ssim": float(r["val_ms_ssim"])}
            for r in rows
            if r.get("val_mae")
        }
        v2 = {}
        for key in rows[0]:
            if key.startswith("v2/") and key.endswith("tau=0.2"):
                values = [float(r[key]) for r in rows if r.get(key)]
                if values:
                    v2[key[3:-8]] = {"first": values[0], "last": values[-1]}
        summary = (
            json.loads((Path(folder) / "summary.json").read_text()) if (Path(folder) / "summary.json").is_file() else {}
        )
        scores = test.get(names.get(label, label), {})
        table[label] = {
            "validation": validation,
            "v2_tau_0.2": v2,
            "wall_seconds": summary.get("wall_seconds"),
            "test": {
                "overall": scores.get("overall"),
                "regions": scores.get("regions"),
                "bone_edge_sharpness": scores.get("bone_edge_sharpness"),
            },
        }
    lines = [
        "| objective | val MAE @500/1000/1500 | val MS-SSIM @1500 | test MAE | test PSNR | test MS-SSIM | "
        "sharpness | WEPL MAE (mm) | range error (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in table.items():
        val = row["validation"]
        overall = row["test"]["overall"] or {}
        last = val[max(val)] if val else {}
        curve = " / ".join("{:.1f}".format(v["mae"]) for _, v in sorted(val.items()))
        lines.append(
            f"| {label} | {curve} | {last.get('ms_ssim', float('nan')):.3f} | "
            f"{overall.get('mae', float('nan')):.1f} | {overall.get('psnr', float('nan')):.2f} | "
            f"{overall.get('ms_ssim', float('nan')):.4f} | {row['test']['bone_edge_sharpness'] or float('nan'):.3f} | "
            f"{overall.get('wepl_mae_mm', float('nan')):.2f} | {overall.get('range_error_pct', float('nan')):.2f} |"
        )
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"table": table, "markdown": lines}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
