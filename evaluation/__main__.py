"""Score synthetic CTs against ground truth as SynthRAD2025 does, and write metrics.json, CSVs and pictures.

    python -m evaluation --pred OUTPUT_DIR --gt DATA_ROOT --out REPORT_DIR [--no-plots]

Exit status: 0 when every paired case was scored; 1 when a paired case could not be scored or nothing was
paired (with --strict, also when a prediction or a ground-truth case is left unpaired); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

try:
    from evaluation import report, segmentation
    from evaluation.metrics import score_case
    from evaluation.pairing import CasePair, log_pairing, pair_cases
except ModuleNotFoundError as missing:  # the tools' packages come with requirements-dev.txt, not requirements.txt
    if (missing.name or "").split(".")[0] not in ("scipy", "matplotlib"):
        raise
    sys.exit(
        f"python -m evaluation needs {missing.name.split('.')[0]}, which requirements.txt (the container's) leaves "
        "out: pip install -r requirements-dev.txt"
    )

log = logging.getLogger("evaluation")


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    """Array (z, y, x) in the file's own dtype, and the image (for its geometry)."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ValueError(f"{path}: cannot be read as an image ({str(err).strip().splitlines()[-1]})") from err
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel, expected 1")
    if image.GetDimension() != 3:
        raise ValueError(f"{path}: is {image.GetDimension()}-D, expected 3-D")
    return sitk.GetArrayFromImage(image), image


def _geometry_warning(pred: sitk.Image, ct: sitk.Image) -> str | None:
    """Describe a geometry difference (the metrics ignore geometry, as the official evaluator does)."""
    diffs = []
    for name in ("Spacing", "Origin", "Direction"):
        a, b = getattr(pred, f"Get{name}")(), getattr(ct, f"Get{name}")()
        if not np.allclose(a, b, atol=1e-3):
            diffs.append(f"{name.lower()} {tuple(round(v, 4) for v in a)} != {tuple(round(v, 4) for v in b)}")
    return "; ".join(diffs) or None


@dataclass
class Extras:
    """Optional scores beyond the image metrics: a segmenter for Dice/HD95, the dosimetric proxies."""

    segmenter: object | None = None
    dosimetry: bool = False
    calibration: object | None = None
    beams: tuple[float, ...] = ()
    bone_hu: tuple[float, ...] = ()


def score_pair(pair: CasePair, extras: Extras, montage_path: Path | None) -> tuple[dict, str | None]:
    """Read one pair, score it (segment it, and its dosimetric proxies, when enabled), draw its montage;
    returns (result, warning)."""
    ct, ct_img = _read(pair.ct)
    mask, _ = _read(pair.mask)
    pred, pred_img = _read(pair.prediction)
    if pred.shape != ct.shape:
        raise ValueError(f"{pair.prediction}: shape {pred.shape} (z, y, x) differs from the ground truth {ct.shape}")
    if mask.shape != ct.shape:
        raise ValueError(f"{pair.mask}: shape {mask.shape} differs from the ground-truth CT {ct.shape}")
    scores = score_case(ct, pred, mask)
    spacing_zyx = tuple(reversed(ct_img.GetSpacing()))
    if extras.segmenter is not None:
        scores.update(
            segmentation.segmentation_scores(
                pair.prediction, pair.ct, pair.segmentation, pair.region, spacing_zyx, extras.segmenter
            )
        )
    if extras.dosimetry:
        from evaluation import dosimetry

        maps: dict | None = {} if montage_path is not None else None
        scores.update(
            dosimetry.dosimetric_scores(
                ct, pred, mask, spacing_zyx, extras.calibration, extras.beams, extras.bone_hu, maps
            )
        )
        if maps:
            dosimetry.save_wepl_pictures(montage_path.with_name(f"{pair.case_id}_wepl.png"), pair.case_id, maps, mask)
    if montage_path is not None:
        from evaluation.plots import save_case_montage

        mr = None
        if pair.mr is not None:
            mr_arr, _ = _read(pair.mr)
            mr = mr_arr if mr_arr.shape == ct.shape else None
        save_case_montage(montage_path, pair.case_id, pair.region, ct, pred, mask, scores, spacing_zyx, mr)
    return report.case_result(pair.case_id, pair.region, scores, pair.prediction), _geometry_warning(pred_img, ct_img)


def run_evaluation(
    pred_dir: Path,
    gt_dir: Path,
    out_dir: Path,
    plots: bool = True,
    progress: bool | None = None,
    segmenter: str = "auto",
    dosimetry: bool = False,
    calibration: Path | None = None,
    beams: tuple[float, ...] | None = None,
    bone_hu: tuple[float, ...] | None = None,
) -> tuple[dict, int]:
    """Pair, score, summarise and write everything to `out_dir`; returns (metrics document, exit status).

    segmenter: "auto" (TotalSegmentator when its weights are present, else Dice/HD95 are skipped),
    "totalsegmentator" or "threshold" (the stand-in). dosimetry adds WEPL, RED and bone-Dice scores.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    pairing = pair_cases(pred_dir, gt_dir)
    log_pairing(pairing)

    seg, seg_status = segmentation.make_segmenter(segmenter)
    (log.info if seg is not None else log.warning)("segmentation metrics (Dice, HD95) %s", seg_status)
    extras = Extras(segmenter=seg, dosimetry=dosimetry)
    if dosimetry:
        from evaluation import dosimetry as dosimetry_module

        extras.calibration = dosimetry_module.load_calibration(calibration or dosimetry_module.DEFAULT_CALIBRATION)
        extras.beams = tuple(beams or dosimetry_module.DEFAULT_BEAMS)
        extras.bone_hu = tuple(bone_hu or dosimetry_module.DEFAULT_BONE_HU)
        log.info(
            "dosimetric proxies: calibration %s, beams %s degrees, bone thresholds %s HU",
            extras.calibration.source,
            extras.beams,
            extras.bone_hu,
        )

    case_dir = out_dir / "cases"
    if plots:
        case_dir.mkdir(exist_ok=True)
    results, failed, warnings = [], [], []
    started = time.perf_counter()
    with logging_redirect_tqdm():
        for pair in tqdm(
            pairing.pairs, desc="scoring", unit="case", disable=None if progress is None else not progress
        ):
            try:
                result, warning = score_pair(pair, extras, case_dir / f"{pair.case_id}.png" if plots else None)
            except (ValueError, OSError) as err:
                log.error("case %s not scored: %s", pair.case_id, err)
                failed.append({"case_id": pair.case_id, "region": pair.region, "reason": str(err)})
                continue
            if warning:
                log.warning(
                    "case %s: prediction geometry differs from the ground truth (ignored, as the "
                    "official evaluator does): %s",
                    pair.case_id,
                    warning,
                )
                warnings.append({"case_id": pair.case_id, "warning": f"geometry differs: {warning}"})
            results.append(result)
            log.debug("case %s: %s", pair.case_id, result)

    aggregates, regions = report.summarise(results)
    document = {
        "results": results,
        "aggregates": aggregates,
        "regions": regions,
        "segmentation_metrics": seg_status,
        "dosimetry": (
            {"calibration": extras.calibration.source, "beams_deg": list(extras.beams), "bone_hu": list(extras.bone_hu)}
            if dosimetry
            else "not requested (--dosimetry)"
        ),
        "pairing": {**pairing.report(), "failed": failed},
        "warnings": warnings,
        "run": {
            "pred": str(Path(pred_dir).resolve()),
            "gt": str(Path(gt_dir).resolve()),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 2),
        },
    }
    report.write_metrics_json(out_dir / "metrics.json", document)
    report.write_case_csv(out_dir / "metrics_per_case.csv", results)
    report.write_region_csv(out_dir / "metrics_per_region.csv", aggregates, regions)
    if plots and results:
        from evaluation.plots import save_boxplots

        save_boxplots(out_dir / "boxplots.png", results, report.metric_names(results))

    for metric, agg in aggregates.items():
        if agg["count"]:
            log.info(
                "%-8s mean %.4f  std %s  (n=%d)",
                metric,
                agg["mean"],
                "n/a" if agg["std"] is None else f"{agg['std']:.4f}",
                agg["count"],
            )
    log.info("wrote %s", out_dir / "metrics.json")
    status = 0 if results and not failed else 1
    if not results:
        log.error("no case was scored")
    return document, status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pred",
        required=True,
        type=Path,
        help="predictions: the product's output folder (images/synthetic-ct/, results.json), "
        "a released-layout folder (<ID>/sct.mha) or a flat folder of <ID>.mha",
    )
    parser.add_argument(
        "--gt",
        required=True,
        type=Path,
        help="ground truth: Task1/<REGION>/<ID>/{ct,mask}.mha (or a folder of region or case "
        "folders); an mr image beside them is shown in the montages",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="report folder: metrics.json, metrics_per_case.csv, metrics_per_region.csv, boxplots.png, cases/<ID>.png",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the montages and box plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when anything is left unpaired (predictions or ground-truth cases)",
    )
    parser.add_argument(
        "--segmenter",
        choices=("auto", "totalsegmentator", "threshold"),
        default="auto",
        help="Dice/HD95: auto (TotalSegmentator when its weights are present, else skipped), "
        "totalsegmentator (required), threshold (a stand-in from HU thresholds)",
    )
    parser.add_argument(
        "--dosimetry",
        action="store_true",
        help="add the dosimetric proxies: WEPL per beam, RED error, bone Dice (evaluation/dosimetry.py)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        help="HU -> RSP/RED table (CSV: hu,rsp,red; default: the "
        "generic Schneider-type curve in evaluation/calibration/)",
    )
    parser.add_argument(
        "--beams", default="0,90,180,270", help="coplanar beam angles in degrees (default: %(default)s)"
    )
    parser.add_argument("--bone-hu", default="250,600", help="bone Dice thresholds in HU (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        log.error(
            "the plots need matplotlib, which is not installed: pip install -r requirements-dev.txt, or --no-plots"
        )
        return 2
    for folder, what in ((args.pred, "prediction"), (args.gt, "ground-truth")):
        if not folder.is_dir():
            log.error("%s folder not found: %s", what, folder)
            return 2
    try:
        beams = tuple(float(v) for v in args.beams.split(",") if v.strip())
        bone_hu = tuple(float(v) for v in args.bone_hu.split(",") if v.strip())
    except ValueError:
        log.error("--beams and --bone-hu take comma-separated numbers")
        return 2
    try:
        document, status = run_evaluation(
            args.pred,
            args.gt,
            args.out,
            plots=not args.no_plots,
            progress=False if args.no_progress else None,
            segmenter=args.segmenter,
            dosimetry=args.dosimetry,
            calibration=args.calibration,
            beams=beams,
            bone_hu=bone_hu,
        )
    except ValueError as err:  # a calibration table or a required segmenter that cannot be used
        log.error("%s", err)
        return 2
    unpaired = document["pairing"]["unpaired_predictions"] or document["pairing"]["gt_without_prediction"]
    if args.strict and unpaired:
        log.error("--strict: some predictions or ground-truth cases were not paired")
        status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
