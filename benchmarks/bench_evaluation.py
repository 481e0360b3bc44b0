"""Time the SynthRAD image metrics on one whole-size case (default 512 x 512 x 100) on one CPU core.

The issue asks for a case of that size to be scored in under 20 s on one core. The volumes are synthetic
(a seeded body ellipse with a bone ring, and a noisy, slightly blurred prediction) because only the size and
the mask fraction matter for the time.

    python benchmarks/bench_evaluation.py              # 100 x 512 x 512 (z, y, x), int16 CT, float32 sCT
    python benchmarks/bench_evaluation.py --repeats 3 --pred-dtype int16
"""

from __future__ import annotations

import os

# One core: pin the BLAS/OpenMP pools before NumPy/SciPy load, and the process itself below.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluation.metrics import mae, ms_ssim, psnr, score_case  # noqa: E402

log = logging.getLogger("bench_evaluation")


def make_case(shape: tuple[int, int, int], pred_dtype: str, seed: int) -> tuple[np.ndarray, ...]:
    """A seeded CT-like volume, a prediction with errors, and a body mask (about half the voxels)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = ((yy - ny / 2) / (0.42 * ny)) ** 2 + ((xx - nx / 2) / (0.45 * nx)) ** 2
    body2d = r < 1.0
    bone2d = (r > 0.55) & (r < 0.62)
    ct = np.full(shape, -1000, dtype=np.int16)
    ct[:, body2d] = 40
    ct[:, bone2d] = 1200
    ct = (ct + rng.normal(0, 20, shape)).clip(-1024, 3071).astype(np.int16)
    pred = gaussian_filter(ct.astype(np.float32), 1.0) + rng.normal(0, 30, shape).astype(np.float32)
    pred = pred.astype(pred_dtype)
    mask = np.broadcast_to(body2d, shape).astype(np.uint8)
    return ct, pred, mask


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(100, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--pred-dtype", default="float32", choices=("float32", "int16"))
    parser.add_argument("--repeats", type=int, default=1, help="timed repetitions of score_case")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    ct, pred, mask = make_case(tuple(args.shape), args.pred_dtype, args.seed)
    log.info("case %s, CT %s, sCT %s, mask fraction %.2f", ct.shape, ct.dtype, pred.dtype, mask.mean())

    parts = {}
    for name, fn in (("mae", mae), ("psnr", psnr), ("ms_ssim", ms_ssim)):
        t0 = time.perf_counter()
        fn(ct, pred, mask)
        parts[name] = time.perf_counter() - t0
    totals = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        scores = score_case(ct, pred, mask)
        totals.append(time.perf_counter() - t0)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "shape_zyx": list(ct.shape),
        "pred_dtype": args.pred_dtype,
        "scores": scores,
        "seconds_score_case": totals,
        "seconds_per_metric": parts,
        "peak_rss_mib": round(peak_mib),
    }
    log.info(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
