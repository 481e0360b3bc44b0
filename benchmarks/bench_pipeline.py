"""Measure the pipeline's non-model cost and peak memory (the water model isolates everything but a network).

    python benchmarks/bench_pipeline.py --shape 100,400,400           # time vs plain SimpleITK read + write
    python benchmarks/bench_pipeline.py --shape 300,512,512 --memory  # peak resident memory of process.py
    python benchmarks/bench_pipeline.py --model drifting --repeats 1  # a generator end to end: s/case, s/slice

Numbers are printed as a JSON line; nothing is asserted (this is a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from process_runner import run_process

REPO = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("bench_pipeline")


def make_case(folder: Path, shape: tuple[int, int, int], seed: int = 0) -> tuple[Path, Path]:
    """A template-layout case: an int16 MR with an elliptical body and its mask, non-identity direction."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    y, x = np.ogrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    body = ((x / 0.85) ** 2 + (y / 0.7) ** 2 < 1.0).astype(np.uint8)
    mask = np.broadcast_to(body, shape).copy()
    mr = np.empty(shape, dtype=np.int16)
    for z in range(depth):  # slice by slice keeps the generator's own memory small
        mr[z] = np.where(body, 500 + 200 * x + 100 * y + rng.normal(0, 20, (height, width)), 0)
    paths = []
    for array, kind in ((mr, "mri"), (mask, "body")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 3.0))
        image.SetOrigin((-200.0, -180.0, 40.0))
        image.SetDirection((1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
        path = folder / "images" / kind / "bench.mha"
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(path), useCompression=True)
        paths.append(path)
    (folder / "region.json").write_text('"Abdomen"')
    return paths[0], paths[1]


def plain_read_write(mr: Path, mask: Path, out: Path) -> float:
    """The floor: read both files and write one compressed int16 image with SimpleITK, nothing else."""
    started = time.perf_counter()
    image = sitk.ReadImage(str(mr))
    sitk.ReadImage(str(mask))
    sitk.WriteImage(image, str(out), useCompression=True)
    return time.perf_counter() - started


def time_process(folder: Path, out: Path, model: str = "water") -> tuple[float, float]:
    """Wall time and peak RSS (MB) of `process.py` with one model in a fresh process."""
    run = run_process(
        ["--input", folder, "--output", out, "--model", model, "--no-progress", "--device", "cpu"], check=True
    )
    return run.seconds, run.peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="100,400,400", help="slices,rows,columns (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the median is reported")
    parser.add_argument("--memory", action="store_true", help="report peak memory of one run (fresh process)")
    parser.add_argument("--model", default="water", help="manifest entry or kind (default: water)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shape = tuple(int(v) for v in args.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        mr, mask = make_case(folder, shape)
        if args.memory or args.model != "water":
            seconds = []
            for index in range(args.repeats):
                wall, peak_mb = time_process(folder, Path(tmp) / f"out{index}", args.model)
                seconds.append(wall)
            wall = float(np.median(seconds))
            print(
                json.dumps(
                    {
                        "shape": shape,
                        "model": args.model,
                        "process_seconds_per_case": round(wall, 2),
                        "seconds_per_slice": round(wall / shape[0], 4),
                        "peak_rss_mb": round(peak_mb),
                    }
                )
            )
            return
        plain = float(np.median([plain_read_write(mr, mask, Path(tmp) / "plain.mha") for _ in range(args.repeats)]))
        # In-process timing of run_case excludes interpreter start-up and imports (reported separately).
        sys.path.insert(0, str(REPO))
        from engine.manifest import load_manifest
        from pipeline.cases import discover_cases
        from pipeline.run import GeneratorPool, RunOptions, run_case

        manifest = load_manifest()
        options = RunOptions(model_override="water", progress=False)
        pool = GeneratorPool("cpu")
        times = []
        for _ in range(args.repeats):
            (case,) = discover_cases(folder, Path(tmp) / "out")
            result = run_case(case, manifest, pool, options)
            if not result.ok:
                raise SystemExit(result.errors)
            times.append(result.seconds)
        whole, _ = time_process(folder, Path(tmp) / "out_cli")
        print(
            json.dumps(
                {
                    "shape": shape,
                    "plain_sitk_read_write_seconds": round(plain, 2),
                    "pipeline_case_seconds": round(float(np.median(times)), 2),
                    "ratio": round(float(np.median(times)) / plain, 2),
                    "process_py_wall_seconds_incl_startup": round(whole, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
