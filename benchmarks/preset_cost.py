"""The cost table of the generator presets: parameters, GFLOP per slice, CPU seconds per case, GPU estimates.

    python benchmarks/preset_cost.py --presets S,M,L --data data/phantoms_final --out docs/results/release_recipe/preset_cost.json

Per preset (untrained weights: the cost does not depend on them):
- parameters and forward GFLOP per 512 x 512 slice with its 5 context slices and 1 noise channel (torch's
  FlopCounterMode, a multiply-add counts 2 FLOPs, convolutions only);
- measured: `process.py` on one synthetic 400 x 400 x 100 case (benchmarks/bench_pipeline.make_case) on the CPU,
  ONNX Runtime with SCT_THREADS threads, one run each, read to write, in a new process: its CPU seconds (user +
  system; what other jobs on a shared machine inflate least) and its wall seconds;
- estimated, not measured: GPU seconds per such case and per training epoch of the 890-case release on a T4 and
  an A100, from the counted FLOPs, each GPU's stated peak rate and an assumed utilisation (UTILISATION). A training
  slice costs 3 forward passes (forward + backward) of the generator plus, with the anatomy loss, 4 of the tissue
  network (sCT with gradient, CT without); an epoch is every slice of every case once at its padded in-plane size,
  with the slice count and size per case taken from the release-sized phantoms under --data (their sizes follow the
  release's) and scaled to 890 cases.
Writes a JSON report and prints a markdown table. Nothing is asserted: this measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

LOG = logging.getLogger("preset_cost")

RELEASE_CASES = 890
RECIPE_STEPS, RECIPE_BATCH, RECIPE_CROP = 200_000, 16, 384  # configs/synthrad2025_task1.toml, one fold
UTILISATION = 0.30  # assumed share of the peak rate reached (the README's earlier H100 estimate used the same)
#: Peak dense rates in TFLOP/s from NVIDIA's datasheets: inference runs the shipped float32 ONNX files, training
#: float16 autocast (optim.amp) on the tensor cores.
GPUS = {
    "T4": {"fp32": 8.1, "fp16": 65.0},
    "A100": {"fp32": 19.5, "fp16": 312.0},
}


def padded(size: int, stride: int) -> int:
    return stride * -(-size // stride)


def release_slices(data: Path | None) -> dict:
    """Slices per case and mean padded pixels per slice of the release-sized phantoms (model space: 1 mm in-plane)."""
    import SimpleITK as sitk

    from training.dataset import find_cases

    cases = find_cases(data) if data else []
    if not cases:
        return {
            "source": "assumed: 100 slices of 512 x 512 per case",
            "slices_per_case": 100.0,
            "shapes": [(100, 512, 512)],
        }
    shapes = []
    for case_dir, _ in cases:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(case_dir / "mr.mha"))
        reader.ReadImageInformation()
        x, y, z = reader.GetSize()
        sx, sy, _ = reader.GetSpacing()
        shapes.append((z, round(y * sy), round(x * sx)))
    return {
        "source": f"{len(cases)} release-sized phantom cases under {data}",
        "slices_per_case": float(np.mean([s[0] for s in shapes])),
        "shapes": shapes,
    }


def epoch_flops(model_gflop_at, tissue_gflop_at, shapes, stride: int, anatomy: bool) -> float:
    """Training FLOPs of one epoch of RELEASE_CASES cases shaped like `shapes` (mean per case, scaled)."""
    per_case = []
    for slices, height, width in shapes:
        h, w = padded(height, stride), padded(width, stride)
        per_slice = 3 * model_gflop_at(h, w) + (4 * tissue_gflop_at(h, w) if anatomy else 0.0)
        per_case.append(slices * per_slice)
    return float(np.mean(per_case)) * RELEASE_CASES * 1e9


def run_process(case: Path, manifest: Path, model: str, out: Path, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of process.py on one case: the CPU time (user + system of the child) is what
    a shared machine's other jobs do not inflate much; the wall time is what an idle machine with `threads` cores
    would take about CPU time / threads for."""
    import resource

    env = {**os.environ, "SCT_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "process.py"), "--input", str(case), "--output", str(out), "--model", model]
        + ["--manifest", str(manifest), "--device", "cpu", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"process.py --model {model} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="S,M,L")
    parser.add_argument("--data", type=Path, default=None, help="release-sized phantoms (slice counts and sizes)")
    parser.add_argument("--shape", default="100,400,400", help="z,y,x of the measured CPU case (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (SCT_THREADS)")
    parser.add_argument("--no-cpu-run", action="store_true", help="skip the process.py timing (FLOPs and estimates)")
    parser.add_argument("--out", type=Path, default=Path("runs/preset_cost/report.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch
    from bench_pipeline import make_case

    from engine.manifest import DEFAULT_MANIFEST, read_manifest_json
    from engine.regions import default_regions
    from training.anatomy import TissueNet
    from training.config import load_config
    from training.family import build_generator, flops_per_slice, network_stride, parameter_count
    from training.manifest_entries import add_entry
    from training.networks import export_onnx

    torch.manual_seed(0)
    tissue = TissueNet()

    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tissue.eval()(torch.zeros(1, 1, 512, 512))
    tissue_gflop_512 = counter.get_total_flops() / 1e9

    def tissue_gflop_at(height: int, width: int) -> float:
        """Every layer is a convolution over a grid that shrinks by whole strides: FLOPs scale with the pixels."""
        return tissue_gflop_512 * height * width / 512**2

    release = release_slices(args.data)
    depth, height, width = (int(v) for v in args.shape.split(","))
    rows = []
    with tempfile.TemporaryDirectory(prefix="preset_cost_") as tmp:
        tmp = Path(tmp)
        case = tmp / "case"
        if not args.no_cpu_run:
            make_case(case, (depth, height, width))
        manifest = tmp / "manifest.json"
        shipped = read_manifest_json(DEFAULT_MANIFEST)
        routes = {code: {"model": "water", "fallback": None} for code in default_regions()}
        manifest.write_text(
            json.dumps(
                {
                    "schema_version": 1,
                    "defaults": shipped["defaults"],
                    "models": {"water": {"kind": "water"}},
                    "regions": routes,
                }
            )
        )
        for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
            model_config = load_config(None, [f'model.preset="{preset}"']).model
            model = build_generator(model_config, context_slices=5).eval()
            stride = network_stride(model_config)
            gflop_512 = flops_per_slice(model, 512, 512) / 1e9

            def gflop_at(h: int, w: int, gflop_512=gflop_512) -> float:
                """Exact for sizes that are multiples of the stride (every layer's grid scales with the slice)."""
                return gflop_512 * h * w / 512**2

            case_h, case_w = padded(height, stride), padded(width, stride)
            row = {
                "preset": preset,
                "tissue_gflop_per_slice_512": round(tissue_gflop_512, 2),
                "parameters": parameter_count(model),
                "gflop_per_slice_512": round(gflop_at(512, 512), 2),
                "gflop_per_slice_case": round(gflop_at(case_h, case_w), 2),
                "case_slice_size": [case_h, case_w],
            }
            if not args.no_cpu_run:
                onnx = tmp / f"{preset}.onnx"
                export_onnx(model, onnx, context_slices=5, noise_channels=1)
                from engine.manifest import sha256_of

                entry = {"kind": "drifting", "files": {"generator": {"path": onnx.name, "sha256": sha256_of(onnx)}}}
                if stride != 16:
                    entry["divisible_by"] = stride
                add_entry(manifest, preset, entry, [], "primary")
                wall, cpu = run_process(case, manifest, preset, tmp / f"out_{preset}", args.threads)
                row["cpu_seconds_per_case"] = round(cpu, 1)
                row["wall_seconds_per_case"] = round(wall, 1)
                LOG.info("%s: %.1f CPU s (%.1f s wall) per %s case", preset, cpu, wall, args.shape)
            case_flop = depth * gflop_at(case_h, case_w) * 1e9
            training = {
                anatomy: epoch_flops(gflop_at, tissue_gflop_at, release["shapes"], stride, anatomy)
                for anatomy in (False, True)
            }
            # the release recipe's run: RECIPE_STEPS steps of RECIPE_BATCH crops of RECIPE_CROP^2, L1 + anatomy
            recipe = (
                RECIPE_STEPS
                * RECIPE_BATCH
                * 1e9
                * (3 * gflop_at(RECIPE_CROP, RECIPE_CROP) + 4 * tissue_gflop_at(RECIPE_CROP, RECIPE_CROP))
            )
            for gpu, peak in GPUS.items():
                training_rate = peak["fp16"] * 1e12 * UTILISATION
                row[f"{gpu}_seconds_per_case_fp32"] = round(case_flop / (peak["fp32"] * 1e12 * UTILISATION), 2)
                row[f"{gpu}_minutes_per_epoch_l1"] = round(training[False] / training_rate / 60, 1)
                row[f"{gpu}_minutes_per_epoch_l1_anatomy"] = round(training[True] / training_rate / 60, 1)
                row[f"{gpu}_hours_per_recipe_fold"] = round(recipe / training_rate / 3600, 2)
            row["epoch_pflop_l1"] = round(training[False] / 1e15, 2)
            row["epoch_pflop_l1_anatomy"] = round(training[True] / 1e15, 2)
            rows.append(row)
    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "cpu_case_shape": args.shape,
        "threads": args.threads,
        "load_average_after": os.getloadavg(),
        "assumptions": {
            "utilisation": UTILISATION,
            "peak_tflops": GPUS,
            "release_cases": RELEASE_CASES,
            "release_slices": {k: v for k, v in release.items() if k != "shapes"},
            "training_slice": "3 generator forward passes (+ 4 tissue-network passes with the anatomy loss), float16",
            "inference": "float32 ONNX, one forward pass per slice, no flip TTA or ensemble",
            "recipe_fold": f"{RECIPE_STEPS} steps x {RECIPE_BATCH} crops of {RECIPE_CROP}^2, L1 + anatomy, float16",
        },
        "presets": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        "| preset | parameters | GFLOP / 512 x 512 slice | CPU s (wall s) / 400 x 400 x 100 case, measured | "
        "T4 / A100 s per case* | T4 / A100 min per epoch, L1 (+ anatomy)* | T4 / A100 h per recipe fold* |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['parameters'] / 1e6:.2f} M | {r['gflop_per_slice_512']} | "
            f"{r.get('cpu_seconds_per_case', '-')} ({r.get('wall_seconds_per_case', '-')}) | {r['T4_seconds_per_case_fp32']} / {r['A100_seconds_per_case_fp32']} | "
            f"{r['T4_minutes_per_epoch_l1']} ({r['T4_minutes_per_epoch_l1_anatomy']}) / "
            f"{r['A100_minutes_per_epoch_l1']} ({r['A100_minutes_per_epoch_l1_anatomy']}) | "
            f"{r['T4_hours_per_recipe_fold']} / {r['A100_hours_per_recipe_fold']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
