"""Per-region facts of the released data the phantoms imitate: folders, case IDs, centres, scanned slab, MR look.

They live in the one region table (engine/regions.json, each region's "phantom" block); this module turns a row
into a RegionSpec. Centres and their case counts per region follow SynthRAD2025 Task 1 (shared/docs/synthrad.md,
section 2): AB A/B/C, HN A/C/D, TH A/B; centre B is the 0.35 T MR-linac. The 2023 regions (brain, pelvis) use
centres A/B/C. Which sequence each centre ran is not published per centre; the table's mapping is a plausible
choice that gives every region more than one MR contrast.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.regions import REGIONS, Region, RegionError, canonical_region


@dataclass(frozen=True)
class RegionSpec:
    code: str  # canonical code (HN, TH, AB, BRAIN, PELVIS)
    folder: str  # folder name under Task1/
    id_code: str  # region letters inside the case ID
    display_name: str  # what region.json holds
    seed_key: int  # the region's random stream (phantoms/generate.py _rng): a new number gives new phantoms
    centres: dict[str, int]  # centre letter -> weight (training cases in the release)
    sequences: dict[str, str]  # centre letter -> imaging.SEQUENCES key
    top: tuple[float, float]  # range of the slab's upper end, mm below the vertex (x height scale)
    length: tuple[float, float]  # range of the slab length, mm
    low_top: tuple[float, float] | None = None  # alternative slab (lower abdomen down to the hips)
    low_rate: float = 0.0
    arms_possible: bool = False  # arms can lie in the field of view (imperfection)
    defaced: bool = False
    metal: str = ""  # "dental" or "hip"


def _pair(value) -> tuple[float, float]:
    low, high = value
    return float(low), float(high)


def spec_of(row: Region) -> RegionSpec:
    """The phantom spec of one region table row (its "phantom" block); RegionError when it has none."""
    look = row.phantom
    if not look:
        raise RegionError(f"region {row.code!r} has no 'phantom' block in the region table: no phantoms for it")
    return RegionSpec(
        code=row.code,
        folder=row.folder,
        id_code=row.id_letters,
        display_name=row.name,
        seed_key=int(look["seed_key"]),
        centres={letter: int(weight) for letter, weight in look["centres"].items()},
        sequences=dict(look["sequences"]),
        top=_pair(look["top"]),
        length=_pair(look["length"]),
        low_top=_pair(look["low_top"]) if look.get("low_top") is not None else None,
        low_rate=float(look.get("low_rate", 0.0)),
        arms_possible=bool(look.get("arms_possible", False)),
        defaced=bool(look.get("defaced", False)),
        metal=str(look.get("metal", "")),
    )


def region_spec(region: str) -> RegionSpec:
    """RegionSpec for any accepted spelling ('HN', 'Head and Neck', 'brain', ...); raises RegionError."""
    return spec_of(REGIONS[canonical_region(region)])


def case_id(spec: RegionSpec, centre: str, number: int) -> str:
    """'1HNA001' (2025 style: task, region, centre, number) or '1BA001' for the 2023 regions."""
    return f"1{spec.id_code}{centre}{number:03d}"
