"""Generate paired MR/CT/mask phantoms in the SynthRAD released layout.

    python -m phantoms --out data/phantoms --regions HN,TH,AB --cases 20 --seed 0
    python -m phantoms --out /tmp/tiny --regions HN,TH,AB,BRAIN,PELVIS --cases 2 --size small --template-layout

Writes <out>/Task1/{HN,TH,AB,brain,pelvis}/<ID>/{mr,ct,mask}.mha (int16, compressed) and <out>/phantoms.json;
with --template-layout also <out>/template/<ID>/{images/mri,images/body}/<ID>.mha + region.json, with
--overview <out>/overview/<ID>.png. The same seed always gives the same cases; case k of a region does not
depend on --cases. Exit status: 0 on success, 2 for bad arguments, 1 when a case could not be generated.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from engine.regions import REGIONS, RegionError, accepted_values, default_regions, region_codes

try:
    from phantoms.anatomy import CSF_RIM_MM, MAX_SCALP_MM, SCALP_MM
    from phantoms.generate import SIZES, PhantomError, Rates
    from phantoms.memory import keep_freed_memory
    from phantoms.randomise import LEVELS
    from phantoms.region_specs import region_spec
    from phantoms.writer import ANATOMIES, write_dataset
except ModuleNotFoundError as missing:  # the tools' packages come with requirements-dev.txt, not requirements.txt
    if (missing.name or "").split(".")[0] not in ("scipy", "matplotlib"):
        raise
    sys.exit(
        f"python -m phantoms needs {missing.name.split('.')[0]}, which requirements.txt (the container's) leaves "
        "out: pip install -r requirements-dev.txt"
    )

log = logging.getLogger("phantoms")


def _regions(text: str) -> list[str]:
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            out.append(region_spec(part.strip()).code)
        except RegionError as err:
            raise argparse.ArgumentTypeError(f"{err}") from err
    if not out:
        raise argparse.ArgumentTypeError(f"no region given; accepted: {accepted_values()}")
    return out


def _editions() -> str:
    """The region table's codes by challenge edition, for --help: 'HN, TH, AB (2025) and BRAIN, PELVIS (2023)'."""
    years = sorted({row.edition for row in REGIONS.values()}, reverse=True)
    return " and ".join(f"{', '.join(region_codes(year))} ({year})" for year in years)


def _spacing(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"spacing must be three numbers like 1,1,3 (got {text!r})") from err
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"spacing must be three positive numbers x,y,z in mm (got {text!r})")
    return values


def _mm_range(text: str, what: str, example: str) -> tuple[float, float]:
    """LOW,HIGH in mm as two floats (argparse's one-line error otherwise)."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{what} is LOW,HIGH in mm, like {example} (got {text!r})") from err
    return low, high


def _csf_rim(text: str) -> tuple[float, float]:
    low, high = _mm_range(text, "the CSF rim", "1,3")
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"the CSF rim needs 0 < LOW <= HIGH (got {text!r})")
    return low, high


def _scalp(text: str) -> tuple[float, float]:
    low, high = _mm_range(text, "the scalp", "4,12")
    if not 2.0 <= low <= high <= MAX_SCALP_MM:
        raise argparse.ArgumentTypeError(f"the scalp needs 2 <= LOW <= HIGH <= {MAX_SCALP_MM:g} mm (got {text!r})")
    return low, high


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"a rate is a number in [0, 1] (got {text!r})") from err
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate must be within [0, 1] (got {value})")
    return value


def build_parser() -> argparse.ArgumentParser:
    d = Rates()
    parser = argparse.ArgumentParser(
        prog="python -m phantoms", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument(
        "--regions",
        type=_regions,
        default=list(default_regions()),
        help=f"comma-separated region codes or names: {_editions()}; default {','.join(default_regions())}",
    )
    parser.add_argument("--cases", type=int, default=20, help="cases per region (default 20)")
    parser.add_argument("--start", type=int, default=0, help="index of the first case (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument(
        "--spacing",
        type=_spacing,
        default=(1.0, 1.0, 3.0),
        help="voxel size x,y,z in mm (default 1,1,3 as the 2025 release; the 2023 release used "
        "1,1,1 for brain and 1,1,2.5 for pelvis)",
    )
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="full",
        help="full: real-size cases; small: ~5x coarser voxels and margins scaled down, for tests",
    )
    parser.add_argument(
        "--template-layout",
        action="store_true",
        help="also write each case as a grand-challenge input folder under <out>/template/<ID>/",
    )
    parser.add_argument("--overview", action="store_true", help="also write <out>/overview/<ID>.png per case")
    parser.add_argument(
        "--misalign-rate",
        type=_rate,
        default=d.misalign,
        help=f"fraction of cases with a small rigid MR-CT misalignment (default {d.misalign})",
    )
    parser.add_argument(
        "--metal-rate",
        type=_rate,
        default=d.metal,
        help=f"fraction with metal: dental fillings, hip implant/spinal fixation, sternal wires (default {d.metal})",
    )
    parser.add_argument(
        "--arms-rate",
        type=_rate,
        default=d.arms,
        help=f"fraction of TH/AB cases with the arms in the field of view (default {d.arms})",
    )
    parser.add_argument(
        "--couch-rate",
        type=_rate,
        default=d.couch,
        help=f"fraction of cases whose CT shows the couch top (default {d.couch})",
    )
    parser.add_argument(
        "--banding-rate",
        type=_rate,
        default=d.banding,
        help=f"fraction of low-field (0.35 T bSSFP) cases with banding (default {d.banding})",
    )
    parser.add_argument(
        "--mr-randomisation",
        choices=LEVELS,
        default="off",
        help="MR domain randomisation (phantoms/randomise.py): off (default; the per-centre sequence "
        "models), physics (wider sequence parameters plus gamma, resolution, Gibbs ringing and "
        "motion ghosts) or full (as physics, with a random contrast per tissue); the CT is "
        "unchanged",
    )
    parser.add_argument(
        "--variability",
        action="store_true",
        help="anatomical variability (phantoms/variability.py): a random elastic deformation of the "
        "labels (MR and CT alike) and textures inside tissues (fat septa, lung vessels, "
        "trabeculae)",
    )
    parser.add_argument(
        "--csf-rim-mm",
        type=_csf_rim,
        default=CSF_RIM_MM,
        help="with --variability: range of the CSF rim between skull and brain, LOW,HIGH in mm "
        f"(default {CSF_RIM_MM[0]:g},{CSF_RIM_MM[1]:g}: young to atrophic)",
    )
    parser.add_argument(
        "--scalp-mm",
        type=_scalp,
        default=SCALP_MM,
        help="with --variability: range of the scalp's thickness over the cranium (skin to skull), LOW,HIGH in mm "
        f"(default {SCALP_MM[0]:g},{SCALP_MM[1]:g}: one fixed thickness; real scalps run from about 4 to over 10)",
    )
    parser.add_argument(
        "--anatomy",
        choices=ANATOMIES,
        default="analytic",
        help="analytic (default): shapes drawn from formulas; template: heads from SPM's tissue probability map "
        "of real heads (HN and BRAIN only; needs pip install --no-deps spm-runtime-r2025b nibabel; "
        "phantoms/template_head.py); the imperfection rates and --variability apply to analytic cases only",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cases < 0 or args.start < 0:
        parser.error("--cases and --start must be >= 0")
    if args.overview and importlib.util.find_spec("matplotlib") is None:
        parser.error("--overview draws with matplotlib, which is not installed: pip install -r requirements-dev.txt")
    keep_freed_memory()  # large temporaries reuse the heap instead of faulting in fresh pages (phantoms/memory.py)
    rates = Rates(
        misalign=args.misalign_rate,
        metal=args.metal_rate,
        arms=args.arms_rate,
        couch=args.couch_rate,
        banding=args.banding_rate,
    )
    try:
        folders = write_dataset(
            args.out,
            args.regions,
            args.cases,
            seed=args.seed,
            spacing=args.spacing,
            size=args.size,
            template_layout=args.template_layout,
            overview=args.overview,
            rates=rates,
            start=args.start,
            progress=False if args.no_progress else None,
            mr_randomisation=args.mr_randomisation,
            variability=args.variability,
            csf_rim_mm=args.csf_rim_mm,
            scalp_mm=args.scalp_mm,
            anatomy=args.anatomy,
        )
    except PhantomError as err:
        log.error("%s", err)
        return 1
    except OSError as err:
        log.error("cannot write under %s: %s", args.out, err)
        return 1
    log.info("%d case folders under %s", len(folders), args.out / "Task1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
