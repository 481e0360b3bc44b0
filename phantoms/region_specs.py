"""Per-region facts of the released data the phantoms imitate: folders, case IDs, centres, scanned slab, MR look.

Centres and their case counts per region follow SynthRAD2025 Task 1 (shared/docs/synthrad.md, section 2):
AB A/B/C, HN A/C/D, TH A/B; centre B is the 0.35 T MR-linac. The 2023 regions (brain, pelvis) use centres
A/B/C. Which sequence each centre ran is not published per centre; the mapping below is a plausible choice
that gives every region more than one MR contrast.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.regions import REGION_NAMES, canonical_region


@dataclass(frozen=True)
class RegionSpec:
    code: str  # canonical code (HN, TH, AB, BRAIN, PELVIS)
    folder: str  # folder name under Task1/
    id_code: str  # region letters inside the case ID
    centres: dict[str, int]  # centre letter -> weight (training cases in the release)
    sequences: dict[str, str]  # centre letter -> imaging.SEQUENCES key
    top: tuple[float, float]  # range of the slab's upper end, mm below the vertex (x height scale)
    length: tuple[float, float]  # range of the slab length, mm
    low_top: tuple[float, float] | None = None  # alternative slab (lower abdomen down to the hips)
    low_rate: float = 0.0
    arms_possible: bool = False  # arms can lie in the field of view (imperfection)
    defaced: bool = False
    metal: str = ""  # "dental" or "hip"

    @property
    def display_name(self) -> str:
        return REGION_NAMES[self.code]


REGIONS: dict[str, RegionSpec] = {
    r.code: r
    for r in (
        RegionSpec(
            "HN",
            "HN",
            "HN",
            {"A": 91, "C": 65, "D": 65},
            {"A": "t1_gre_3t", "C": "t2_tse_1.5t", "D": "t1_se_1.5t"},
            top=(-25.0, 10.0),
            length=(215.0, 330.0),
            defaced=True,
            metal="dental",
        ),
        RegionSpec(
            "TH",
            "TH",
            "TH",
            {"A": 91, "B": 91},
            {"A": "t1_gre_1.5t", "B": "bssfp_0.35t"},
            top=(-300.0, -255.0),
            length=(255.0, 340.0),
            arms_possible=True,
        ),
        RegionSpec(
            "AB",
            "AB",
            "AB",
            {"A": 65, "B": 91, "C": 19},
            {"A": "t1_gre_1.5t", "B": "bssfp_0.35t", "C": "t2_tse_1.5t"},
            top=(-490.0, -430.0),
            length=(160.0, 290.0),
            low_top=(-660.0, -610.0),
            low_rate=0.2,
            arms_possible=True,
            metal="hip",
        ),
        RegionSpec(
            "BRAIN",
            "brain",
            "B",
            {"A": 60, "B": 60, "C": 60},
            {"A": "t1_gre_3t", "B": "t1_gre_1.5t", "C": "t1_se_1.5t"},
            top=(5.0, 20.0),
            length=(160.0, 215.0),
            defaced=True,
            metal="dental",
        ),
        RegionSpec(
            "PELVIS",
            "pelvis",
            "P",
            {"A": 60, "B": 60, "C": 60},
            {"A": "t2_tse_1.5t", "B": "t1_gre_1.5t", "C": "t2_tse_3t"},
            top=(-725.0, -680.0),
            length=(170.0, 250.0),
            metal="hip",
        ),
    )
}

REGION_INDEX = {"HN": 1, "TH": 2, "AB": 3, "BRAIN": 4, "PELVIS": 5}


def region_spec(region: str) -> RegionSpec:
    """RegionSpec for any accepted spelling ('HN', 'Head and Neck', 'brain', ...); raises RegionError."""
    return REGIONS[canonical_region(region)]


def case_id(spec: RegionSpec, centre: str, number: int) -> str:
    """'1HNA001' (2025 style: task, region, centre, number) or '1BA001' for the 2023 regions."""
    return f"1{spec.id_code}{centre}{number:03d}"
