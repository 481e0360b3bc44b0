"""SynthRAD MR -> synthetic CT: the grand-challenge entrypoint and local command line.

Container mode (default when /input exists and no other input is given):
    reads /input/images/mri/*, /input/images/body/*, /input/region.json;
    writes /output/images/synthetic-ct/<case id>.mha and /output/results.json.
One run at a time per output folder (a second is refused, exit status 2); SIGTERM/SIGINT still write
results.json (exit status 128 + the signal's number).
Local modes:
    python process.py --input DIR --output DIR         template layout or released Task1/{AB,HN,TH}/<ID>/ layout
    python process.py --mr MR --mask MASK --region HN --out SCT.mha
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from engine.kinds import kind_names
from engine.manifest import DEFAULT_MANIFEST, MODEL_TARBALL_DIR, ManifestError, choose_manifest
from engine.regions import accepted_values, region_folders
from pipeline.cases import Case, discover_cases, single_case
from pipeline.lock import OutputLocked, output_lock
from pipeline.results import result_entry, run_info, write_json_atomic
from pipeline.run import CaseResult, GeneratorPool, RunOptions, remove_stale_outputs, run_case
from pipeline.signals import Stopped, stop_on_signals
from preprocessing.errors import printable
from preprocessing.load import memory_budget_bytes

LOG = logging.getLogger("process")
CONTAINER_INPUT = Path("/input")
CONTAINER_OUTPUT = Path("/output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="process.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"Regions: {accepted_values()}; in the released layout the region comes from the folder "
            f"({region_folders()}). Every mode writes results.json (template format) into its output folder; the "
            "exit status is 1 when any case failed."
        ),
    )
    where = parser.add_argument_group("inputs and outputs")
    where.add_argument(
        "--input",
        type=Path,
        help="folder in the template layout (images/mri, images/body, region.json) "
        "or the released layout (Task1/<REGION>/<ID>/mr.mha + mask.mha)",
    )
    where.add_argument("--output", type=Path, help="output folder (images/synthetic-ct/<name>, results.json)")
    where.add_argument("--mr", type=Path, help="single-case mode: the MR image")
    where.add_argument("--mask", type=Path, help="single-case mode: the body mask (same grid as the MR)")
    where.add_argument("--out", type=Path, help="single-case mode: the sCT file to write (.mha)")
    where.add_argument("--region", help="region (required with --mr; overrides region.json or the folder otherwise)")
    model = parser.add_argument_group("model and runtime")
    model.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help=f"model manifest (default: {MODEL_TARBALL_DIR}/manifest.json when a model tarball is "
        f"mounted there, else {DEFAULT_MANIFEST})",
    )
    model.add_argument("--model", help=f"force a manifest entry or a model kind ({kind_names()}) for every case")
    model.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="ONNX Runtime device; auto takes CUDA when it loads, else the CPU (default: auto)",
    )
    model.add_argument("--batch-size", type=int, help="slices per network call (default: automatic)")
    model.add_argument(
        "--memory-budget-gb",
        type=float,
        default=None,
        help="refuse a case whose estimated working memory exceeds this (default: "
        "SCT_MEMORY_BUDGET_GB, else 4, the grand-challenge template's limit)",
    )
    model.add_argument(
        "--samples",
        type=int,
        default=1,
        help="noise draws per slice; >1 writes their mean as the sCT and the voxel-wise standard "
        "deviation (HU) beside it; with an ensemble or flip_tta model every member and mirror view counts as "
        "a draw, so the spread shows their disagreement (default: 1)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (also off when not a terminal)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def collect_cases(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[list[Case], Path, bool]:
    """The cases of this run, the folder for results.json, and whether this is container mode."""
    single = [args.mr, args.mask, args.out]
    if any(single):
        if not all(single) or not args.region:
            parser.error("single-case mode needs --mr, --mask, --region and --out together")
        if not args.out.name.lower().endswith(".mha") or args.out.name.lower() == ".mha":
            parser.error(
                f"--out {printable(args.out)}: the sCT is written as MetaImage; give a file name ending in .mha"
            )
        return [single_case(args.mr, args.mask, args.region, args.out, args.samples)], args.out.absolute().parent, False
    if args.input is not None:
        if args.output is None:
            parser.error("--input needs --output")
        if not args.input.is_dir():
            parser.error(f"--input {args.input}: not a folder")
        return discover_cases(args.input, args.output, args.region, args.samples), args.output, False
    if CONTAINER_INPUT.is_dir():
        return discover_cases(CONTAINER_INPUT, CONTAINER_OUTPUT, args.region, args.samples), CONTAINER_OUTPUT, True
    parser.error("no input: give --input/--output or --mr/--mask/--region/--out (or run where /input exists)")
    raise AssertionError("unreachable")


def _stopped_results(
    cases: list[Case], results: list[CaseResult], current: Case | None, stop: Stopped
) -> list[CaseResult]:
    """Entries for the cases a signal kept from finishing: the one it interrupted, and those never started.

    Each is a failed case like any other: one line, and no sCT left under its name.
    """
    missing = []
    for case in cases[len(results) :]:
        result = CaseResult(case)
        if case is current:
            result.errors.append(f"{printable(case.mr, 400)}: interrupted by {stop.name} before it finished")
        else:
            result.errors.append(f"{printable(case.mr, 400)}: not started: the run was stopped by {stop.name}")
        remove_stale_outputs(case)
        missing.append(result)
    return missing


def run_cases(args: argparse.Namespace, cases: list[Case], results_dir: Path, container: bool) -> int:
    """Every case in order, then results.json (and run_info.json locally); SIGTERM/SIGINT end the loop early
    and results.json still says what finished, what failed and what never started. Returns the exit status."""
    results: list[CaseResult] = []
    manifest = None
    current = None
    stopped: Stopped | None = None
    with stop_on_signals() as guard:
        try:
            try:
                choice = choose_manifest(args.manifest, MODEL_TARBALL_DIR)
                manifest = choice.manifest
            except ManifestError as err:
                LOG.error("%s", err)
                return 2
            if not cases:
                LOG.error("%s: no MR images found", printable(args.input or CONTAINER_INPUT))
            options = RunOptions(
                device=args.device,
                batch_size=args.batch_size,
                samples=args.samples,
                model_override=args.model,
                progress=not args.no_progress and sys.stderr.isatty(),
                memory_budget_bytes=memory_budget_bytes(args.memory_budget_gb),
                manifest_note=choice.note,
            )
            pool = GeneratorPool(args.device)
            started = time.perf_counter()
            if cases:
                LOG.info("%d case(s); manifest %s", len(cases), manifest.path)
            from tqdm import tqdm

            for case in tqdm(cases, desc="cases", unit="case", disable=not options.progress or len(cases) < 2):
                current = case
                result = run_case(case, manifest, pool, options)
                results.append(result)
                if result.ok:
                    LOG.info(
                        "%s: done in %.1f s with %s -> %s (%s)",
                        printable(case.case_id),
                        result.seconds,
                        result.model,
                        printable(case.output, 400),
                        result.stages.summary(),
                    )
                else:
                    for message in result.errors:
                        LOG.error("%s", message)
        except Stopped as stop:
            stopped = stop
        guard.disarm()  # from here a signal is only remembered: results.json must be written whole
        if stopped is not None:
            missing = _stopped_results(cases, results, current, stopped)
            LOG.error(
                "stopped by %s: %d case(s) ran, %d interrupted or not started; writing results.json",
                stopped.name,
                len(results),
                len(missing),
            )
            results += missing
        failed = sum(not r.ok for r in results)
        try:
            write_json_atomic([result_entry(r) for r in results], results_dir / "results.json")
            if not container and manifest is not None and cases:
                write_json_atomic(run_info(vars(args), manifest.path, results), results_dir / "run_info.json")
        except OSError as err:
            LOG.error("%s: cannot write results.json (%s)", results_dir, err.strerror or err)
            return 2
    if stopped is not None:
        return stopped.exit_status
    if not cases:
        return 1
    LOG.info(
        "%d of %d case(s) done in %.1f s; %d failed",
        len(results) - failed,
        len(results),
        time.perf_counter() - started,
        failed,
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.memory_budget_gb is not None and not args.memory_budget_gb > 0:
        parser.error("--memory-budget-gb must be a positive number")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    cases, results_dir, container = collect_cases(args, parser)
    try:
        with output_lock(results_dir):
            return run_cases(args, cases, results_dir, container)
    except OutputLocked as err:
        LOG.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
