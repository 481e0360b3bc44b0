"""Time the phantom generator on one CPU core: seconds per full-size case, per stage, and the write cost.

The issue asks for a typical case in under 3 s on one core. This script pins the process (and the BLAS/OpenMP
pools) to one core, generates `--cases` cases of each region at the default 1 x 1 x 3 mm, and reports the
per-case generation time (anatomy, CT, MR, mask + crop) and, separately, the time to write the three
compressed .mha files. Both wall-clock and CPU seconds are reported: on a shared, busy machine the wall time
includes waiting for the core, the CPU time does not (the process is single-threaded), so the CPU time is
the cost of a case on one core. The load average is printed too.

    python benchmarks/bench_phantoms.py                       # HN, TH, AB, 3 cases each
    python benchmarks/bench_phantoms.py --regions HN,TH,AB,BRAIN,PELVIS --cases 5 --json out.json
    python benchmarks/bench_phantoms.py --mr-randomisation full --variability --no-write   # the randomised cost

Like the CLI (`python -m phantoms`), it keeps freed memory in the process (phantoms/memory.py), so the first
large case grows the heap and later ones reuse it. `--passes 2` (the default) generates every case twice: the
summary is the last pass, the steady state of a dataset run; the first pass's numbers are reported beside it
(`first_pass`), and every row says its pass and its system time.
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
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import SimpleITK as sitk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from phantoms import generate_case, write_case  # noqa: E402
from phantoms.memory import keep_freed_memory  # noqa: E402

log = logging.getLogger("bench_phantoms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", default="HN,TH,AB", help="comma-separated regions (default HN,TH,AB)")
    parser.add_argument("--cases", type=int, default=3, help="cases per region (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="full", choices=("full", "small"))
    parser.add_argument(
        "--mr-randomisation",
        default="off",
        choices=("off", "physics", "full"),
        help="MR domain randomisation level (phantoms/randomise.py; default off)",
    )
    parser.add_argument(
        "--variability", action="store_true", help="anatomical variability: elastic deformation and tissue textures"
    )
    parser.add_argument("--no-write", action="store_true", help="skip timing the compressed writes")
    parser.add_argument(
        "--passes", type=int, default=2, help="generate every case this many times; the summary is the last pass"
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's allocator as it is (the generator's CLI keeps freed memory; this measures without)",
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    if args.passes < 1:
        parser.error("--passes must be >= 1")
    kept = False if args.default_allocator else keep_freed_memory()

    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    generate_case("BRAIN", 0, seed=args.seed, size="small")  # warm-up: imports, lookup tables
    rows = []
    cases = [(p, region, i) for p in range(1, args.passes + 1) for region in regions for i in range(args.cases)]
    with tempfile.TemporaryDirectory() as tmp:
        for pass_number, region, i in cases:
            sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            t0, c0 = time.perf_counter(), time.process_time()
            case = generate_case(
                region,
                i,
                seed=args.seed,
                size=args.size,
                mr_randomisation=args.mr_randomisation,
                variability=args.variability,
            )
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0
            write_s = None
            if not args.no_write:
                t0 = time.perf_counter()
                write_case(case, Path(tmp))
                write_s = time.perf_counter() - t0
            shape = case.info["shape_zyx"]
            rows.append(
                {
                    "case_id": case.case_id,
                    "pass": pass_number,
                    "region": case.region,
                    "shape_zyx": shape,
                    "megavoxels": round(shape[0] * shape[1] * shape[2] / 1e6, 2),
                    "generate_s": round(seconds, 3),
                    "generate_cpu_s": round(cpu, 3),
                    "generate_sys_s": round(system, 3),
                    "write_s": None if write_s is None else round(write_s, 3),
                    "stages_s": {k: v for k, v in case.info["timings"].items() if k != "total_s"},
                }
            )
            log.info(
                "pass %d %s %-6s %-16s %5.1f Mvox  generate %.2f s (cpu %.2f s, of it system %.2f s)  write %s",
                pass_number,
                case.case_id,
                case.region,
                "x".join(map(str, shape)),
                rows[-1]["megavoxels"],
                seconds,
                cpu,
                system,
                "-" if write_s is None else f"{write_s:.2f} s",
            )
    first = [r for r in rows if r["pass"] == 1]
    first_pass = {
        "generate_max_s": round(max(r["generate_s"] for r in first), 3),
        "generate_cpu_mean_s": round(statistics.mean(r["generate_cpu_s"] for r in first), 3),
        "generate_cpu_max_s": round(max(r["generate_cpu_s"] for r in first), 3),
        "generate_sys_total_s": round(sum(r["generate_sys_s"] for r in first), 3),
    }
    all_rows, rows = rows, [r for r in rows if r["pass"] == args.passes]
    gen = [r["generate_s"] for r in rows]
    cpu = [r["generate_cpu_s"] for r in rows]
    per_region = {}
    for region in sorted({r["region"] for r in rows}):
        g = [r["generate_s"] for r in rows if r["region"] == region]
        c = [r["generate_cpu_s"] for r in rows if r["region"] == region]
        per_region[region] = {
            "mean_s": round(statistics.mean(g), 3),
            "max_s": round(max(g), 3),
            "cpu_mean_s": round(statistics.mean(c), 3),
            "cpu_max_s": round(max(c), 3),
        }
    report = {
        "size": args.size,
        "mr_randomisation": args.mr_randomisation,
        "variability": args.variability,
        "cases": len(rows),
        "passes": args.passes,
        "allocator_keeps_freed_memory": kept,
        "generate_mean_s": round(statistics.mean(gen), 3),
        "generate_median_s": round(statistics.median(gen), 3),
        "generate_max_s": round(max(gen), 3),
        "generate_cpu_mean_s": round(statistics.mean(cpu), 3),
        "generate_cpu_median_s": round(statistics.median(cpu), 3),
        "generate_cpu_max_s": round(max(cpu), 3),
        "generate_sys_total_s": round(sum(r["generate_sys_s"] for r in rows), 3),
        "per_region": per_region,
        "first_pass": first_pass,
        "write_mean_s": round(statistics.mean([r["write_s"] for r in rows]), 3) if not args.no_write else None,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rows": all_rows,
    }
    summary = {k: v for k, v in report.items() if k != "rows"}
    log.info(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
