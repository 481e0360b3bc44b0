"""Score several models on the same held-out phantom cases: metrics per region, bone-edge sharpness, time, montage.

    python benchmarks/compare_models.py --data data/phantoms --models water,l1,drifting \
        --manifest runs/compare/manifest.json --out runs/compare

The cases are the test split of the committed split file (`--split`, training/splits.py): never used to train
or to choose a checkpoint. `--cases` narrows them; a case of the train or validation split is refused. Each model runs through `process.py` (ONNX Runtime, the CPU here) exactly as a user would run
it; the evaluator scores the outputs. Writes comparison.json, comparison.md (the README tables) and
montage.png. Nothing is asserted: this measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.process_runner import run_process  # noqa: E402
from evaluation.__main__ import run_evaluation  # noqa: E402
from training.dataset import find_cases  # noqa: E402
from training.distil import link_or_copy  # noqa: E402
from training.splits import SplitError, load_split  # noqa: E402

LOG = logging.getLogger("compare_models")
BONE_HU = 300.0


DEFAULT_SPLIT = REPO / "configs" / "splits" / "phantoms_final.json"


def held_out_cases(
    data: Path, split_path: Path, only: list[str] | None = None, subset: str = "test"
) -> list[tuple[Path, str]]:
    """The `subset` cases (test by default) found under `data`, or the named ones, each of which must be one."""
    split = load_split(split_path)
    found = find_cases(data)
    if only:
        chosen = [case for case in found if case[0].name in set(only)]
        missing = sorted(set(only) - {case[0].name for case in chosen})
        if missing:
            raise SplitError(f"{data}: case(s) {missing} not found")
        split.require(chosen, subset)
        return chosen
    chosen = split.select(found, subset)
    if not chosen:
        raise SplitError(f"{split_path}: no {subset} case of the split was found under {data}")
    return chosen


def held_out_layout(data: Path, out: Path, split_path: Path = DEFAULT_SPLIT, only: list[str] | None = None) -> Path:
    """A released-layout folder holding the test cases (mr, ct, mask) as hard links (copies across file systems):
    process.py refuses links that leave its input folder. Refuses any other case."""
    held_out = held_out_cases(data, split_path, only)
    root = out / "held_out" / "Task1"
    if root.is_dir():  # a rerun with other cases must not keep the earlier ones
        shutil.rmtree(root)
    for case_dir, _ in held_out:
        target = root / case_dir.parent.name / case_dir.name
        for name in ("mr.mha", "ct.mha", "mask.mha"):
            link_or_copy((case_dir / name).resolve(), target / name)
    return root.parent


def bone_edge_sharpness(sct: np.ndarray, ct: np.ndarray, mask: np.ndarray) -> float:
    """Mean in-plane gradient magnitude of the sCT over that of the CT in a 2-voxel band around CT bone (1 = as sharp)."""
    bone = (ct > BONE_HU) & (mask > 0)
    if not bone.any():
        return float("nan")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # in-plane only: slices are 3 mm apart
    band = ndimage.binary_dilation(bone, structure, 2) & ~ndimage.binary_erosion(bone, structure, 2) & (mask > 0)

    def gradient(volume: np.ndarray) -> np.ndarray:
        volume = volume.astype(np.float32)
        return np.hypot(ndimage.sobel(volume, axis=1), ndimage.sobel(volume, axis=2))

    return float(gradient(sct)[band].mean() / max(gradient(ct)[band].mean(), 1e-6))


#: The --models name that runs the manifest's own region routes (e.g. one model per region) instead of one entry.
ROUTES = "routes"


def run_model(model: str, data_root: Path, out: Path, manifest: Path) -> float:
    """process.py on every held-out case with one model (or the manifest's routes); returns wall seconds per case."""
    cases = sorted(data_root.glob("Task1/*/*"))
    run = run_process(
        [
            "--input",
            data_root,
            "--output",
            out,
            *(["--model", model] if model != ROUTES else []),
            "--manifest",
            manifest,
            "--no-progress",
            "--device",
            "cpu",
        ],
        check=True,
    )
    return run.seconds / max(1, len(cases))


def montage(models: list[str], out: Path, data_root: Path) -> Path:
    """The same axial slice of one case per region: MR, CT, then each model's sCT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [sorted(d.iterdir())[0] for d in sorted((data_root / "Task1").iterdir())]
    fig, axes = plt.subplots(
        len(cases), 2 + len(models), figsize=(2.6 * (2 + len(models)), 2.6 * len(cases)), squeeze=False
    )
    for row, case in enumerate(cases):
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "ct.mha")))
        z = int(np.argmax((ct > BONE_HU).sum(axis=(1, 2))))
        panels = [
            ("MR", sitk.GetArrayFromImage(sitk.ReadImage(str(case / "mr.mha")))[z], None),
            ("CT", ct[z], (-1000, 1500)),
        ]
        for model in models:
            sct = sitk.GetArrayFromImage(
                sitk.ReadImage(str(out / model / "images" / "synthetic-ct" / f"{case.name}.mha"))
            )
            panels.append((model, sct[z], (-1000, 1500)))
        for col, (title, image, window) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(
                image,
                cmap="gray",
                vmin=None if window is None else window[0],
                vmax=None if window is None else window[1],
            )
            ax.set_title(f"{case.name} {title}" if col == 0 else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    path = out / "montage.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def paired_difference(reference: dict[str, float], other: dict[str, float]) -> dict[str, float]:
    """MAE of `other` minus `reference` over the cases both scored: mean, standard error, cases where it is lower.

    Paired per case, because the cases differ far more from each other than the models do: a mean difference
    within about two standard errors is not evidence that one model is better.
    """
    common = sorted(set(reference) & set(other))
    differences = np.array([other[c] - reference[c] for c in common], dtype=float)
    if differences.size == 0:
        return {"mean": float("nan"), "standard_error": float("nan"), "lower_in": 0, "cases": 0}
    spread = differences.std(ddof=1) / np.sqrt(differences.size) if differences.size > 1 else float("nan")
    return {
        "mean": float(differences.mean()),
        "standard_error": float(spread),
        "lower_in": int((differences < 0).sum()),
        "cases": int(differences.size),
    }


def paired_lines(summary: dict[str, dict], models: list[str]) -> list[str]:
    """A markdown table: each model's per-case MAE difference against the first model of the list."""
    reference = models[0]
    lines = [
        f"| model | MAE minus {reference}'s, paired per case (HU) | standard error | cases with lower MAE |",
        "|---|---|---|---|",
    ]
    for model in models[1:]:
        diff = paired_difference(summary[reference]["case_mae"], summary[model]["case_mae"])
        lines.append(
            f"| {model} | {diff['mean']:+.2f} | {diff['standard_error']:.2f} | {diff['lower_in']} of {diff['cases']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="phantom (or real) data in the released layout")
    parser.add_argument(
        "--models",
        default="water,drifting",
        help="comma-separated manifest entries or kinds; 'routes' runs the manifest's region routes (a model per region)",
    )
    parser.add_argument("--manifest", type=Path, default=REPO / "model_weights" / "manifest.json")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="split file; its test cases are scored")
    parser.add_argument("--cases", default="", help="comma-separated case ids (each must be in the test split)")
    parser.add_argument("--dosimetry", action="store_true", help="also score WEPL, RED and bone Dice (evaluation)")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    models = [m for m in args.models.split(",") if m]
    try:
        data_root = held_out_layout(args.data, args.out, args.split, [c for c in args.cases.split(",") if c])
    except SplitError as err:
        LOG.error("%s", err)
        raise SystemExit(2) from err
    summary: dict[str, dict] = {}
    for model in models:
        LOG.info("running %s", model)
        seconds = run_model(model, data_root, args.out / model, args.manifest.resolve())
        document, _ = run_evaluation(
            args.out / model,
            data_root,
            args.out / f"eval_{model}",
            plots=False,
            progress=False,
            dosimetry=args.dosimetry,
        )
        sharpness = []
        for result in document["results"]:
            case = next(data_root.glob(f"Task1/*/{result['case_id']}"))
            ct = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "ct.mha")))
            mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "mask.mha")))
            sct = sitk.GetArrayFromImage(
                sitk.ReadImage(str(args.out / model / "images" / "synthetic-ct" / f"{case.name}.mha"))
            )
            sharpness.append(bone_edge_sharpness(sct, ct, mask))
        summary[model] = {
            "seconds_per_case": round(seconds, 2),
            "overall": {k: v["mean"] for k, v in document["aggregates"].items()},
            "regions": {
                r: {k: v["mean"] for k, v in agg.items() if isinstance(v, dict)}
                for r, agg in document["regions"].items()
            },
            "bone_edge_sharpness": round(float(np.nanmean(sharpness)), 3),
            "cases": len(document["results"]),
            "case_mae": {result["case_id"]: result["mae"] for result in document["results"]},
        }
    (args.out / "comparison.json").write_text(json.dumps(summary, indent=2))
    lines = ["| region | model | MAE (HU) | PSNR (dB) | MS-SSIM |", "|---|---|---|---|---|"]
    for region in sorted({r for s in summary.values() for r in s["regions"]}):
        for model in models:
            scores = summary[model]["regions"].get(region, {})
            lines.append(
                f"| {region} | {model} | {scores.get('mae', float('nan')):.1f} | "
                f"{scores.get('psnr', float('nan')):.2f} | {scores.get('ms_ssim', float('nan')):.4f} |"
            )
    lines += [
        "",
        "| model | bone-edge sharpness (sCT/CT gradient) | seconds per case (CPU, process.py) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {m} | {summary[m]['bone_edge_sharpness']:.3f} | {summary[m]['seconds_per_case']:.1f} |" for m in models
    ]
    lines += ["", *paired_lines(summary, models)]
    (args.out / "comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    LOG.info("montage: %s", montage(models, args.out, data_root))


if __name__ == "__main__":
    main()
