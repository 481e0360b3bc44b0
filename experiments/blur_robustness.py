"""How a model's sCT degrades when the MR is smoother than its training phantoms (measures; nothing is asserted).

    python experiments/blur_robustness.py --models l1 --cases 1HND004 --sigmas 0,1.5,3 --out docs/results/real_mr_transfer/blur_robustness.json

Phantom MR has sharp tissue borders and per-voxel noise; real MR is often smoother (lower resolution, denoising,
and the averaged MNI head of the real-MR check most of all). Each test-split case's MR is blurred in-plane with a
Gaussian of sigma mm (slices untouched), run through process.py with each model, and scored against its CT inside
the body mask: MAE (HU), bone recall (share of CT bone > 300 HU that the sCT calls bone) and false bone (share of
the body called bone where the CT has none). Only test-split cases are accepted (training/splits.py), unless
`--subset val` asks for validation cases: the protocol that may choose between models trained on different phantom
sets (their own validation cases differ), run on the validation ids of several data roots at once:

    python experiments/blur_robustness.py --subset val --data data/phantoms_final data/phantoms_var2_hn \
        data/phantoms_var3_hn --cases 1HND001,1HND002 --models l1_smooth_hn,... --out docs/results/real_mr_transfer/validation_TAG.json

(`MEASURE=val bash experiments/real_mr_compare.sh` runs it for a set of checkpoints.)

The summary gives each model's mean over every case (and data root) per sigma.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from benchmarks.process_runner import run_process  # noqa: E402
from compare_models import BONE_HU, DEFAULT_SPLIT, held_out_cases  # noqa: E402

LOG = logging.getLogger("blur_robustness")


def blurred_case(case_dir: Path, sigma_mm: float, out: Path) -> None:
    """mr.mha blurred in-plane (sigma in mm) and the mask, as a single-case pair in `out`."""
    image = sitk.ReadImage(str(case_dir / "mr.mha"))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing_x, spacing_y, _ = image.GetSpacing()
    if sigma_mm > 0:
        array = ndimage.gaussian_filter(array, (0.0, sigma_mm / spacing_y, sigma_mm / spacing_x))
    blurred = sitk.GetImageFromArray(np.rint(array).astype(np.int16))
    blurred.CopyInformation(image)
    out.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(blurred, str(out / "mr.mha"))
    sitk.WriteImage(sitk.ReadImage(str(case_dir / "mask.mha")), str(out / "mask.mha"))


def summarise(results: list[dict]) -> list[dict]:
    """Each model's mean MAE, bone recall and false bone per sigma over every case and data root."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in results):
        for sigma in dict.fromkeys(r["sigma_mm"] for r in results):
            mine = [r for r in results if r["model"] == model and r["sigma_mm"] == sigma]
            if not mine:
                continue
            rows.append(
                {"model": model, "sigma_mm": sigma, "cases": len(mine)}
                | {
                    key: round(float(np.mean([r[key] for r in mine])), 4)
                    for key in ("mae_hu", "bone_recall", "false_bone")
                }
            )
    return rows


def score(sct: np.ndarray, ct: np.ndarray, body: np.ndarray) -> dict:
    bone = (ct > BONE_HU) & body
    called = (sct > BONE_HU) & body
    return {
        "mae_hu": round(float(np.abs(sct - ct)[body].mean()), 1),
        "bone_recall": round(float((called & bone).sum() / max(1, bone.sum())), 3),
        "false_bone": round(float((called & ~bone).sum() / max(1, body.sum())), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", default=[REPO / "data" / "phantoms_final"],
                        help="data root(s); with several, each named case is read from each")  # fmt: skip
    parser.add_argument("--subset", choices=("test", "val"), default="test",
                        help="the split the cases must belong to (val: to choose between models)")  # fmt: skip
    parser.add_argument("--models", default="l1", help="comma-separated manifest entries")
    parser.add_argument("--manifest", type=Path, default=REPO / "model_weights" / "manifest.json")
    parser.add_argument("--cases", default="1HND004", help="comma-separated case ids of --subset")
    parser.add_argument("--sigmas", default="0,1.5,3", help="in-plane Gaussian sigmas in mm")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    only = [c for c in args.cases.split(",") if c]
    cases = [(root, case) for root in args.data for case in held_out_cases(root, args.split, only, args.subset)]
    results = []
    with tempfile.TemporaryDirectory(prefix="blur_") as tmp:
        for root_index, (root, (case_dir, region)) in enumerate(cases):
            ct = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "ct.mha"))).astype(np.float32)
            body = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "mask.mha"))) > 0
            for sigma in [float(s) for s in args.sigmas.split(",")]:
                folder = Path(tmp) / f"{root_index}_{case_dir.name}_{sigma}"
                blurred_case(case_dir, sigma, folder)
                for model in [m for m in args.models.split(",") if m]:
                    target = folder / f"{model}.mha"
                    run_process(
                        ["--mr", folder / "mr.mha", "--mask", folder / "mask.mha", "--region", region, "--out", target,
                         "--model", model, "--manifest", args.manifest, "--no-progress", "--device", "cpu"],
                        check=True,
                    )  # fmt: skip
                    sct = sitk.GetArrayFromImage(sitk.ReadImage(str(target))).astype(np.float32)
                    row = {"case": case_dir.name, "model": model, "sigma_mm": sigma, **score(sct, ct, body)}
                    if len(args.data) > 1:
                        row = {"data": str(root), **row}
                    LOG.info("%s", row)
                    results.append(row)
    report = {"command": " ".join(sys.argv), "subset": args.subset, "results": results, "summary": summarise(results)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
