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
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.real_mr import find_file, head_metrics, prepare_head, save_figure  # noqa: E402

LOG = logging.getLogger("real_mr_check")


def run_models(case_dir: Path, models: list[str], manifest: Path, region: str, out: Path) -> dict[str, dict]:
    """One process.py single-case run per model; metrics from the written sCT."""
    import process

    mr = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "mr.mha"))).astype(np.float32)
    body = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "mask.mha"))) > 0
    brain_image = sitk.ReadImage(str(case_dir / "brain.mha"))
    brain = sitk.GetArrayFromImage(brain_image) > 0
    spacing_zyx = tuple(float(s) for s in reversed(brain_image.GetSpacing()))
    report = {}
    for model in models:
        target = out / model / "sct.mha"
        start = time.perf_counter()
        status = process.main(
            [
                "--mr",
                str(case_dir / "mr.mha"),
                "--mask",
                str(case_dir / "mask.mha"),
                "--region",
                region,
                "--out",
                str(target),
                "--manifest",
                str(manifest),
                "--model",
                model,
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        if status != 0:
            raise RuntimeError(f"process.py failed on the real head with model {model} (exit {status})")
        sct = sitk.GetArrayFromImage(sitk.ReadImage(str(target))).astype(np.float32)
        metrics = head_metrics(sct, brain, body, spacing_zyx)
        metrics["seconds"] = round(time.perf_counter() - start, 2)
        save_figure(
            mr,
            sct,
            brain,
            out / f"{model}.png",
            title=f"{model}: brain > 300 HU {metrics['brain_above_bone_pct']:.2f}%, "
            f"mean {metrics['brain_mean_hu']:.0f} HU, shell bone {metrics['shell_bone_pct']:.1f}%",
        )
        report[model] = metrics
        LOG.info("%s: %s", model, metrics)
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
