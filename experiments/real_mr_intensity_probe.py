"""Does the real head's intensity scale hide its skull? Score models on monotone intensity changes of the head.

    python experiments/real_mr_intensity_probe.py --prepared runs/real_mr_csf/case --models l1_rim_p30 \
        --manifest runs/eval_rim/manifest.json --landmarks configs/landmarks/hn_var3.toml --out docs/results/real_mr_transfer/real_mr_probe.json

Each variant is the prepared real head (experiments/real_mr_check.py) with its MR changed by one monotone map, the
anatomy untouched: `gamma_G` (x -> max * (x / max)^G, darker mid-tones such as the skull's shallow dip) and, with
`--landmarks`, `landmarks` (the head's in-mask histogram standardised onto a training set's landmarks, Nyul-Udupa,
as `mr_normalisation.landmarks` would do inside a model). A model whose skull moves with these reads intensity
levels, not the shape of the head. Measures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.real_mr_check import run_models  # noqa: E402
from preprocessing.normalise import standardise_histogram  # noqa: E402

LOG = logging.getLogger("real_mr_intensity_probe")


def variants(mr: np.ndarray, body: np.ndarray, gammas: list[float], landmarks: tuple | None) -> dict[str, np.ndarray]:
    """name -> changed MR (float32, same grid); `original` first."""
    top = float(mr[body].max()) or 1.0
    out = {"original": mr}
    for gamma in gammas:
        out[f"gamma_{gamma:g}"] = (top * np.clip(mr / top, 0.0, None) ** gamma).astype(np.float32)
    if landmarks:
        standard = mr.copy()
        standardise_histogram(standard, mr[body], landmarks)
        # back onto the head's own range, so only the shape of the histogram changes, not the scale
        low, high = landmarks[0][1], landmarks[-1][1]
        out["landmarks"] = (
            float(mr[body].min()) + (standard - low) / (high - low) * (top - float(mr[body].min()))
        ).astype(np.float32)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, required=True, help="a prepared head (mr, mask, brain .mha)")
    parser.add_argument("--models", required=True, help="comma-separated manifest entries")
    parser.add_argument("--manifest", type=Path, default=REPO / "model_weights" / "manifest.json")
    parser.add_argument("--gammas", default="1.5,2", help="comma-separated gamma exponents")
    parser.add_argument("--landmarks", type=Path, help="a landmarks config fragment (python -m training.landmarks)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "real_mr_probe", help="scratch folder")
    parser.add_argument("--out", type=Path, help="JSON report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    image = sitk.ReadImage(str(args.prepared / "mr.mha"))
    mr = sitk.GetArrayFromImage(image).astype(np.float32)
    body = sitk.GetArrayFromImage(sitk.ReadImage(str(args.prepared / "mask.mha"))) > 0
    landmarks = None
    if args.landmarks:
        pairs = tomllib.loads(args.landmarks.read_text())["settings"]["mr_normalisation"]["landmarks"]
        landmarks = tuple((float(p), float(v)) for p, v in pairs)
    models = [m for m in args.models.split(",") if m]
    report = {"command": " ".join(sys.argv), "variants": {}}
    for name, changed in variants(mr, body, [float(g) for g in args.gammas.split(",") if g], landmarks).items():
        case = args.work / name / "case"
        case.mkdir(parents=True, exist_ok=True)
        written = sitk.GetImageFromArray(np.rint(np.clip(changed, 0, 32767)).astype(np.int16))
        written.CopyInformation(image)
        sitk.WriteImage(written, str(case / "mr.mha"))
        for part in ("mask.mha", "brain.mha"):
            shutil.copyfile(args.prepared / part, case / part)
        results = run_models(case, models, args.manifest, "HN", args.work / name)
        report["variants"][name] = {
            model: {key: value for key, value in metrics.items() if key != "seconds"}
            for model, metrics in results.items()
        }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    for name, per_model in report["variants"].items():
        for model, m in per_model.items():
            LOG.info(
                "%-10s %-16s brain > 300 HU %.2f %%, mean %.0f HU, shell bone %.1f %%",
                name,
                model,
                m["brain_above_bone_pct"],
                m["brain_mean_hu"],
                m["shell_bone_pct"],
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
