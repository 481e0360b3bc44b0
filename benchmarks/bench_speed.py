"""Seconds per case on the CPU for the default model and every candidate, in one run, with the stage breakdown.

    python benchmarks/bench_speed.py                                   # default (l1_flip), l1; 400 x 400 x 100
    python benchmarks/bench_speed.py --former                          # also the former threads (SCT_THREADS=cores)
    python benchmarks/bench_speed.py --manifest runs/quantise/manifest.json --models l1_int8 --batch-sizes auto,4

A synthetic case (bench_pipeline.make_case) runs through pipeline.run.run_case in this process, once per model,
setting and batch size; the models load before the clock starts (their load time is its own column). Every row
gives seconds per case, each stage's wall seconds (read, prepare, network, restore, write: pipeline/timing.py)
and the cores the network stage kept busy (process CPU time / wall time). Settings: `calls` is this version's
(one single-threaded network call per usable core, engine.runtime.parallel_calls); `former` is one call with
every core as an intra-op thread (SCT_THREADS=cores), as before issue 36. Candidates: the manifest's default
for the case's region (`default`), `l1`, every entry derived by quantisation or a float16 copy, and `--models`.
Printed as a table, then one JSON line (also written to --out). Nothing is asserted: this measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_pipeline import make_case  # noqa: E402

from engine.manifest import DEFAULT_MANIFEST, Manifest, load_manifest  # noqa: E402
from engine.runtime import usable_cores  # noqa: E402
from pipeline.cases import discover_cases  # noqa: E402
from pipeline.run import GeneratorPool, RunOptions, run_case  # noqa: E402
from pipeline.timing import STAGES  # noqa: E402

LOG = logging.getLogger("bench_speed")
#: Provenance keys that mark an entry as a faster copy of another (training/quantise.py, training.export --fp16-of).
DERIVED = ("int8_of", "fp16_of")


def candidates(manifest: Manifest, region: str, extra: list[str]) -> list[str]:
    """The default entry of `region` first, then l1, the derived copies and `extra`, each once."""
    names = [manifest.route(region).primary.name]
    if "l1" in manifest.models:
        names.append("l1")
    for name, spec in manifest.models.items():
        if any(key in (spec.provenance or {}) for key in DERIVED):
            names.append(name)
    names += extra
    return list(dict.fromkeys(names))


@contextlib.contextmanager
def threads(value: int | None) -> Iterator[None]:
    """SCT_THREADS set to `value` (None: unset) while sessions load and run, restored afterwards."""
    before = os.environ.get("SCT_THREADS")
    if value is None:
        os.environ.pop("SCT_THREADS", None)
    else:
        os.environ["SCT_THREADS"] = str(value)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SCT_THREADS", None)
        else:
            os.environ["SCT_THREADS"] = before


def measure(folder: Path, out: Path, manifest: Manifest, model: str, batch: int | None, repeats: int) -> dict[str, Any]:
    """Load `model` (timed), run the case once untimed (warm file cache and allocator: otherwise the first row alone
    pays for a cold read), then `repeats` times; the median run's seconds and stages (of two, the faster)."""

    pool = GeneratorPool("cpu")
    (case,) = discover_cases(folder, out)
    started = time.perf_counter()
    route = manifest.resolve(case.region, model)
    pool.get(route.primary)
    load = time.perf_counter() - started

    def run_once():
        (case,) = discover_cases(folder, out)
        result = run_case(
            case, manifest, pool, RunOptions(device="cpu", batch_size=batch, model_override=model, progress=False)
        )
        if not result.ok:
            raise SystemExit(f"{model}: {result.errors}")
        return result

    run_once()  # the warm-up
    runs = [run_once() for _ in range(repeats)]
    middle = sorted(runs, key=lambda r: r.seconds)[(len(runs) - 1) // 2]
    stages = middle.stages.as_dict()
    return {
        "seconds_per_case": round(middle.seconds, 2),
        "seconds_all_runs": [round(r.seconds, 2) for r in runs],
        "load_seconds": round(load, 2),
        "network_cores": stages.get("network", {}).get("cores"),
        "stages": stages,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table."""
    head = ["model", "setting", "batch", "s/case", *STAGES, "net cores", "load s"]
    lines = [head]
    for row in rows:
        stages = row["stages"]
        lines.append(
            [row["model"], row["setting"], str(row["batch"]), f"{row['seconds_per_case']:.2f}"]
            + [f"{stages[s]['seconds']:.2f}" if s in stages else "-" for s in STAGES]
            + [f"{row['network_cores']:.2f}", f"{row['load_seconds']:.2f}"]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest (default: the shipped one)")
    parser.add_argument("--models", default="", help="comma-separated extra entries of --manifest to time")
    parser.add_argument("--shape", default="100,400,400", help="slices,rows,columns of the case (%(default)s)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed runs per row after one untimed warm-up; the median is reported (%(default)s)",
    )
    parser.add_argument(
        "--batch-sizes", default="auto", help="comma-separated slices per call, 'auto' the automatic (%(default)s)"
    )
    parser.add_argument("--former", action="store_true", help="also time the former setting (SCT_THREADS=cores)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    shape = tuple(int(v) for v in args.shape.split(","))
    batches = [None if b.strip() == "auto" else int(b) for b in args.batch_sizes.split(",") if b.strip()]
    manifest = load_manifest(args.manifest)
    cores = usable_cores()
    settings = [("calls", None)] + ([("former", cores)] if args.former else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        make_case(folder, shape)
        (case,) = discover_cases(folder, Path(tmp) / "out")
        names = candidates(manifest, case.region, [m.strip() for m in args.models.split(",") if m.strip()])
        for name in names:
            for setting, value in settings:
                for batch in batches:
                    with threads(value):
                        row = measure(folder, Path(tmp) / "out", manifest, name, batch, args.repeats)
                    row = {"model": name, "setting": setting, "batch": batch or "auto", **row}
                    LOG.warning("%s %s batch %s: %.2f s/case", name, setting, row["batch"], row["seconds_per_case"])
                    rows.append(row)
    report = {"shape": shape, "cores": cores, "manifest": str(args.manifest), "default": names[0], "rows": rows}
    print(table(rows))
    print(json.dumps(report))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
