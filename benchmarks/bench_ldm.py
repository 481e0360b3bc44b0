"""Measure the latent-diffusion fallback on the held-out phantom cases: accuracy per region for N DDIM steps,
the autoencoder's reconstruction bound, and seconds per case beside the other models, in one run.

    python benchmarks/bench_ldm.py --data data/phantoms --steps 10,20,50 --also drifting,water --out runs/bench_ldm

The held-out cases are the trainer's validation split (`split_cases(cases, val_per_region=2, seed=0)`, as
benchmarks/compare_models.py uses), so no model has seen them. Every model runs through `process.py` on the CPU
(ONNX Runtime) exactly as a user runs it, and the evaluator scores the outputs; the LDM runs once per N with its
manifest entry's `sampler.ddim_steps` set to N (a temporary manifest naming the same files). The autoencoder bound
is the CT itself encoded and decoded with the shipped `ct_encoder` and `decoder` files, through the same model
space and restoration as an sCT. Writes bench_ldm.json and bench_ldm.md (the tables of training/LDM.md).
Nothing is asserted: this measures.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from benchmarks.process_runner import run_process  # noqa: E402
from compare_models import DEFAULT_SPLIT, held_out_layout  # noqa: E402
from engine.kinds import kind_name  # noqa: E402
from engine.manifest import ModelSpec, load_manifest, read_manifest_json  # noqa: E402
from engine.runtime import create_session  # noqa: E402
from evaluation.__main__ import run_evaluation  # noqa: E402
from evaluation.metrics import score_case  # noqa: E402
from modelspec import hu_to_normalised  # noqa: E402
from postprocessing import finalise_hu, to_input_grid  # noqa: E402
from preprocessing import prepare_case, to_model_space  # noqa: E402
from training.splits import SplitError  # noqa: E402

LOG = logging.getLogger("bench_ldm")


def step_manifest(manifest_path: Path, name: str, steps: list[int], out: Path) -> tuple[Path, list[str]]:
    """A manifest in `out` with one entry `<name>_n<N>` per step count; every file path made absolute."""
    data = read_manifest_json(manifest_path)
    if name not in data["models"]:
        raise SystemExit(f"{manifest_path}: no model entry {name!r}")
    for entry in data["models"].values():
        for item in entry.get("files", {}).values():
            item["path"] = str((manifest_path.parent / item["path"]).resolve())
    names = []
    for count in steps:
        entry = copy.deepcopy(data["models"][name])
        entry["sampler"] = {**entry.get("sampler", {}), "ddim_steps": count}
        data["models"][f"{name}_n{count}"] = entry
        names.append(f"{name}_n{count}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    path.write_text(json.dumps(data, indent=2))
    load_manifest(path)
    return path, names


def run_model(model: str, data_root: Path, out: Path, manifest: Path) -> tuple[float, list[str]]:
    """process.py on every held-out case with one model (CPU); wall seconds per case and the failed cases' errors."""
    cases = sorted(data_root.glob("Task1/*/*"))
    run = run_process(
        [
            "--input",
            data_root,
            "--output",
            out,
            "--model",
            model,
            "--manifest",
            manifest,
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    seconds = run.seconds / max(1, len(cases))
    results = json.loads((out / "results.json").read_text())
    return seconds, [message for entry in results for message in entry.get("error_messages", [])]


def autoencoder_bound(spec: ModelSpec, cases: list[Path], batch: int = 16) -> list[dict]:
    """Score CT -> ct_encoder -> decoder -> CT on every case: what a perfect latent denoiser would reach."""
    encoder = create_session(spec.file("ct_encoder"), "cpu")
    decoder = create_session(spec.file("decoder"), "cpu")
    low, high = spec.ct_window_hu
    results = []
    for case in tqdm(cases, desc="autoencoder bound"):
        prepared = prepare_case(case / "mr.mha", case / "mask.mha", spec)
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "ct.mha")))
        normalised = hu_to_normalised(np.clip(ct.astype(np.float32), low, high), spec.ct_window_hu)
        model_ct = to_model_space(normalised.astype(np.float32), prepared, pad_value=-1.0)
        recon = np.empty_like(model_ct)
        for start in range(0, model_ct.shape[0], batch):
            (z,) = encoder.run(None, {"ct": np.ascontiguousarray(model_ct[start : start + batch, None])})
            (out,) = decoder.run(None, {"z": z})
            recon[start : start + batch] = np.clip(out[:, 0], -1.0, 1.0)
        sct = finalise_hu(to_input_grid(recon, prepared, spec.ct_window_hu), prepared.mask, spec)
        scores = score_case(ct, sct, prepared.mask)
        results.append({"case_id": case.name, "region": case.parent.name, **scores})
    return results


def _region_means(results: list[dict]) -> dict[str, dict[str, float]]:
    regions: dict[str, dict[str, float]] = {}
    for region in sorted({r["region"] for r in results}):
        members = [r for r in results if r["region"] == region]
        regions[region] = {k: float(np.mean([r[k] for r in members])) for k in ("mae", "psnr", "ms_ssim")}
    return regions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="phantom (or real) data in the released layout")
    parser.add_argument("--manifest", type=Path, default=REPO / "model_weights" / "manifest.json")
    parser.add_argument("--name", default="ldm", help="the LDM's manifest entry (default: %(default)s)")
    parser.add_argument("--steps", default="10,20,50", help="DDIM step counts to measure (default: %(default)s)")
    parser.add_argument(
        "--also",
        default="drifting,water",
        help="other manifest entries or kinds to time and score on the same cases (default: "
        "%(default)s; missing ones are skipped)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_ldm"))
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="split file; its test cases are scored")
    parser.add_argument("--cases", default="", help="comma-separated case ids (each must be in the test split)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime threads per session (SCT_THREADS; 0: onnxruntime's default)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if args.threads:
        os.environ["SCT_THREADS"] = str(args.threads)
    steps = [int(s) for s in args.steps.split(",") if s]
    out = args.out.resolve()
    manifest_path, ldm_names = step_manifest(args.manifest.resolve(), args.name, steps, out)
    manifest = load_manifest(manifest_path)
    kinds = {spec.kind for spec in manifest.models.values()} | {"water"}
    others = [m for m in args.also.split(",") if m and (m in manifest.models or kind_name(m) in kinds)]
    try:
        data_root = held_out_layout(args.data, out, args.split, [c for c in args.cases.split(",") if c])
    except SplitError as err:
        LOG.error("%s", err)
        return 2
    cases = sorted(data_root.glob("Task1/*/*"))
    LOG.info("%d held-out cases: %s", len(cases), ", ".join(c.name for c in cases))

    summary: dict[str, dict] = {"cases": [c.name for c in cases], "models": {}}
    bound = autoencoder_bound(manifest.models[args.name], cases)
    summary["autoencoder_bound"] = {"regions": _region_means(bound), "cases": bound}
    for model in [*ldm_names, *others]:
        LOG.info("running %s", model)
        started = time.perf_counter()
        seconds, errors = run_model(model, data_root, out / model, manifest_path)
        for message in errors:
            LOG.warning("%s: %s", model, message)
        record = {
            "seconds_per_case": round(seconds, 2),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "errors": errors,
            "overall": {},
            "regions": {},
        }
        if len(errors) < len(cases):
            document, _ = run_evaluation(out / model, data_root, out / f"eval_{model}", plots=False, progress=False)
            record["overall"] = {k: v["mean"] for k, v in document["aggregates"].items()}
            record["regions"] = {
                r: {k: v["mean"] if isinstance(v, dict) else v for k, v in agg.items()}
                for r, agg in document["regions"].items()
            }
        summary["models"][model] = record
    (out / "bench_ldm.json").write_text(json.dumps(summary, indent=2))

    rows = [("autoencoder bound (CT -> latent -> CT)", summary["autoencoder_bound"]["regions"])]
    rows += [(m, summary["models"][m]["regions"]) for m in [*ldm_names, *others]]
    lines = ["| region | model | MAE (HU) | PSNR (dB) | MS-SSIM |", "|---|---|---|---|---|"]
    for region in sorted({r for _, regions in rows for r in regions}):
        for model, regions in rows:
            s = regions.get(region, {})
            lines.append(
                f"| {region} | {model} | {s.get('mae', float('nan')):.1f} | {s.get('psnr', float('nan')):.2f} "
                f"| {s.get('ms_ssim', float('nan')):.4f} |"
            )
    reference = next(
        (
            m
            for m in others
            if manifest.models.get(m) is not None and manifest.models[m].kind == "one_step" or m == "drifting"
        ),
        None,
    )
    lines += [
        "",
        "| model | seconds per case (CPU, process.py) | x the drifting generator | failed cases |",
        "|---|---|---|---|",
    ]
    for model in [*ldm_names, *others]:
        seconds = summary["models"][model]["seconds_per_case"]
        ratio = seconds / summary["models"][reference]["seconds_per_case"] if reference else float("nan")
        lines.append(f"| {model} | {seconds:.1f} | {ratio:.1f} | {len(summary['models'][model]['errors'])} |")
    (out / "bench_ldm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
