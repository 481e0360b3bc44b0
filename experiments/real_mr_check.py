"""Run models on a real T1-weighted head (pydeface's mean head on nilearn's MNI152 grid) and score it by anatomy.

    pip install --no-deps nilearn==0.14.1 pydeface==2.1.0   # their data files only; neither is imported
    python experiments/real_mr_check.py --models l1 --out runs/real_mr
    python experiments/real_mr_check.py --prepared test/data/real_head_crop --models l1 --out /tmp/crop   # stored crop

Writes <out>/<model>/sct.mha, <out>/<model>.png (MR and sCT slices) and <out>/report.json, and prints one JSON
line: per model the share of brain voxels above 300 HU (truth ~0), the brain's mean HU (truth ~30) and the share
of bone in the skull shell 2-8 mm outside the brain (truth: the skull). See experiments/real_mr.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.real_mr import PreparedHead, find_file, prepare_head, run_and_score  # noqa: E402

LOG = logging.getLogger("real_mr_check")


def run_models(case_dir: Path, models: list[str], manifest: Path, region: str, out: Path) -> dict[str, dict]:
    """One process.py single-case run per model; metrics from the written sCT."""
    head = PreparedHead.read(case_dir)
    report = {}
    for model in models:
        report[model] = run_and_score(case_dir, head, model, manifest, region, out)
        LOG.info("%s: %s", model, report[model])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--nilearn",
        type=Path,
        default=None,
        help="nilearn wheel or the MNI152 2009 T1 file (default: the installed package)",
    )
    parser.add_argument(
        "--pydeface",
        type=Path,
        default=None,
        help="pydeface wheel or its mean_reg2mean.nii.gz (default: the installed package)",
    )
    parser.add_argument(
        "--prepared",
        type=Path,
        default=None,
        help="a folder already holding mr.mha, mask.mha and brain.mha (skips the template)",
    )
    parser.add_argument("--slices", default="", help="keep only axial slices START:STOP of the prepared head")
    parser.add_argument("--models", default="l1", help="comma-separated manifest entries (default: l1)")
    parser.add_argument("--manifest", type=Path, default=REPO / "model_weights" / "manifest.json")
    parser.add_argument("--region", default="HN", help="region the head runs as (default HN; BRAIN also works)")
    parser.add_argument("--out", type=Path, default=Path("runs/real_mr"))
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")

    args.out.mkdir(parents=True, exist_ok=True)
    if args.prepared is not None:
        case_dir = args.prepared
    else:
        slices = tuple(int(v) for v in args.slices.split(":")) if args.slices else None
        head = prepare_head(find_file("pydeface", args.pydeface), find_file("nilearn", args.nilearn), slices=slices)
        case_dir = args.out / "case"
        head.write(case_dir)
    models = [m for m in args.models.split(",") if m]
    report = {
        "case": str(case_dir),
        "region": args.region,
        "manifest": str(args.manifest),
        "models": run_models(case_dir, models, args.manifest, args.region, args.out),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
