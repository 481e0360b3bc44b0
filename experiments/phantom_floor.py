"""The phantom task's floor: the error of the clean, aligned CT against the stored CT (no model can beat it).

    python experiments/phantom_floor.py --data data/phantoms_final --split configs/splits/phantoms_final.json \
        --out docs/results/test_split/floor_phantoms.json

The generator knows each case's CT before its noise, rendered from the CT's own labels (so without the MR-CT
misregistration, which moves only the MR). Each case of the chosen split is regenerated from phantoms.json with
`clean_ct=True`; the regenerated stored CT must equal the file on disk voxel for voxel (else the data were made
by other code and the floor would be meaningless), and the clean CT is scored against it with the challenge's
metrics inside the body mask. Measures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluation.metrics import score_case  # noqa: E402
from phantoms.generate import generate_case  # noqa: E402
from training.dataset import find_cases  # noqa: E402
from training.splits import load_split  # noqa: E402

LOG = logging.getLogger("phantom_floor")


def floor_scores(data: Path, split_path: Path, split_name: str) -> dict:
    """Per case and per region (mean) MAE / PSNR / MS-SSIM of the clean CT against the stored CT."""
    info = json.loads((data / "phantoms.json").read_text())
    by_id = {case["case_id"]: case for case in info["cases"]}
    split = load_split(split_path)
    cases = split.select(find_cases(data), split_name)
    per_case, per_region = {}, {}
    for case_dir, region in cases:
        meta = by_id[case_dir.name]
        made = generate_case(
            meta["region"],
            meta["index"],
            seed=meta["seed"],
            spacing=tuple(info["spacing_xyz"]),
            size=meta["size"],
            clean_ct=True,
        )
        stored = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "ct.mha")))
        if not np.array_equal(sitk.GetArrayFromImage(made.ct), stored):
            raise SystemExit(f"{case_dir}: regenerating the case does not reproduce its ct.mha; cannot compute a floor")
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "mask.mha")))
        scores = score_case(stored, sitk.GetArrayFromImage(made.ct_clean), mask)
        per_case[case_dir.name] = {"region": region, **{k: float(v) for k, v in scores.items()}}
        per_region.setdefault(region, []).append(scores)
        LOG.info(
            "%s: floor MAE %.2f HU, PSNR %.2f dB, MS-SSIM %.4f",
            case_dir.name,
            scores["mae"],
            scores["psnr"],
            scores["ms_ssim"],
        )
    regions = {
        region: {key: float(np.mean([s[key] for s in rows])) for key in ("mae", "psnr", "ms_ssim")}
        for region, rows in sorted(per_region.items())
    }
    overall = {key: float(np.mean([c[key] for c in per_case.values()])) for key in ("mae", "psnr", "ms_ssim")}
    return {
        "split": split_name,
        "split_file": str(split_path),
        "cases": len(per_case),
        "overall": overall,
        "regions": regions,
        "per_case": per_case,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "phantoms_final")
    parser.add_argument("--split", type=Path, default=REPO / "configs" / "splits" / "phantoms_final.json")
    parser.add_argument("--split-name", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = floor_scores(args.data, args.split, args.split_name)
    print(json.dumps({"overall": report["overall"], "regions": report["regions"]}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
