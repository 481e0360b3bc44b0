"""Preprocessing cache and training loader at data scale, and what one GPU needs (measures; nothing is asserted).

    python benchmarks/bench_loader.py --data data/phantoms_final --config configs/drifting_gpu.toml \
        --out docs/results/phantom_and_loader_speed/bench_loader.json

1. Cache build: the cases of `--data` (phantoms at the release's image sizes) preprocessed into a fresh cache by
   one process (seconds per case on one core), then the up-to-date check of a second pass; the size on disk,
   extrapolated to `--release-cases` cases.
2. Loader: region-balanced 2.5D crops of the config's size from the memory-mapped cache (page cache warmed first,
   as in every epoch after the first) through a torch DataLoader with 0, 1, 2 ... workers: slices per second
   (after the first batch) and per worker. Resident memory counts the mapped cache pages a process touched.
3. One GPU: the config network's FLOPs per training step (counted: 3 x forward conv FLOPs x batch), the steps per
   second a GPU of `--gpu-tflops` reaches at `--utilisation` (both stated, not measured: no GPU here), the
   slices per second it then consumes, the loader workers that takes at the measured per-worker rate, and the
   hours per fold of the config's steps.
Prints one JSON object and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from engine.manifest import training_spec  # noqa: E402
from training.cache import build_cache, load_cached  # noqa: E402
from training.config import load_config  # noqa: E402
from training.dataset import SliceCrops, find_cases  # noqa: E402
from training.networks import flops_per_slice  # noqa: E402
from training.train import build_network  # noqa: E402

LOG = logging.getLogger("bench_loader")


def loader_rate(volumes, spec, crop: int, batch: int, batches: int, workers: int) -> float:
    """Slices per second of region-balanced crops through a DataLoader (first batch, with worker start, excluded)."""
    crops = SliceCrops(
        volumes,
        spec.context_slices,
        crop,
        (batches + 1) * batch,
        spec.normalisation.outside_value,
        region_balanced=True,
    )
    loader = DataLoader(
        crops, batch_size=batch, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )
    started = None
    for index, _ in enumerate(loader):
        if index == 0:
            started = time.perf_counter()
    return batches * batch / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "phantoms_final")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "drifting_gpu.toml")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "bench_cache", help="rebuilt from scratch")
    parser.add_argument("--cases", type=int, default=0, help="use the first N cases (0: all)")
    parser.add_argument("--workers", default="0,1,2", help="loader worker counts to time")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per worker count")
    parser.add_argument("--release-cases", type=int, default=890, help="SynthRAD2025 Task 1 training pairs")
    parser.add_argument("--gpu-tflops", type=float, default=989.0, help="GPU dense bf16 TFLOP/s (H100 SXM: 989)")
    parser.add_argument("--utilisation", type=float, default=0.3, help="assumed share of that rate a conv UNet gets")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    spec = training_spec(config.manifest, "one_step", config.settings)
    cases = find_cases(args.data)
    cases = cases[: args.cases] if args.cases else cases

    shutil.rmtree(args.cache, ignore_errors=True)
    build = build_cache(cases, spec, args.cache, workers=1)
    check_started = time.perf_counter()
    again = build_cache(cases, spec, args.cache, workers=1, progress=False)
    check_seconds = time.perf_counter() - check_started
    volumes = [load_cached(d, r, spec, args.cache) for d, r in cases]
    voxels = sum(v.mr.size for v in volumes)
    for volume in volumes:  # warm the page cache: a training run reads the same pages every epoch
        for array in (volume.mr, volume.ct, volume.mask):
            float(np.asarray(array[:: max(1, array.shape[0] // 64)]).sum())
            np.asarray(array).max()

    rates = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        rate = loader_rate(volumes, spec, config.data.crop, config.optim.batch_size, args.batches, workers)
        rates[workers] = rate
        LOG.info("%d worker(s): %.0f slices/s", workers, rate)
    per_worker = rates.get(1, max(rates.values()))

    model = build_network(config, spec)
    forward = flops_per_slice(model, config.data.crop, config.data.crop)
    step_flops = 3 * forward * config.optim.batch_size
    gpu_steps_per_second = args.gpu_tflops * 1e12 * args.utilisation / step_flops
    gpu_slices_per_second = gpu_steps_per_second * config.optim.batch_size
    result = {
        "cases": len(cases),
        "mean_case_voxels_model_space": round(voxels / len(cases)),
        "cache_build_seconds_per_case_one_core": round(build.seconds_per_built_case, 2),
        "cache_up_to_date_check_seconds": round(check_seconds, 3),
        "cache_rebuilt_on_second_pass": again.built,
        "cache_megabytes": round(build.bytes / 1e6, 1),
        "cache_gigabytes_for_release": round(build.bytes / len(cases) * args.release_cases / 1e9, 1),
        "cache_hours_one_core_for_release": round(build.seconds_per_built_case * args.release_cases / 3600, 2),
        "crop": config.data.crop,
        "batch": config.optim.batch_size,
        "loader_slices_per_second": {str(k): round(v, 1) for k, v in rates.items()},
        "loader_slices_per_second_per_worker": round(per_worker, 1),
        "peak_rss_megabytes": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "network_parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "forward_gflop_per_slice": round(forward / 1e9, 2),
        "train_step_tflop": round(step_flops / 1e12, 3),
        "gpu_assumption": f"{args.gpu_tflops:g} TFLOP/s bf16 at {args.utilisation:.0%} utilisation (stated, not measured)",
        "gpu_steps_per_second": round(gpu_steps_per_second, 2),
        "gpu_slices_per_second_needed": round(gpu_slices_per_second),
        "loader_workers_needed": math.ceil(gpu_slices_per_second / per_worker),
        "hours_per_fold": round(config.optim.steps / gpu_steps_per_second / 3600, 1),
        "steps_per_fold": config.optim.steps,
        "cpu": f"{torch.get_num_threads()} torch threads",
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
