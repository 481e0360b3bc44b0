"""Anatomical regions: one table (engine/regions.json) of every fact about a region, read by everyone.

SynthRAD2025 passes the region as a bare JSON string ("Head and Neck", "Abdomen", "Thorax"); the released
data names region folders HN/AB/TH; SynthRAD2023 used brain and pelvis. All of them route to one code here so
that the manifest, the trainer, the phantom generator and the evaluator agree on a single key per region. The
table is data (like nnU-Net's dataset.json): the product reads the codes, names and spellings, the phantom
generator and the evaluator read their own fields, and nothing else in the repository lists the regions. Every
function here reads `REGIONS` when called, so a region added to the table (or to `REGIONS`) reaches them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().with_name("regions.json")
#: The challenge edition whose regions are the default of the trainer and the phantom generator.
CURRENT_EDITION = 2025
#: region.json holds one short string; anything larger is not a region file.
MAX_REGION_FILE_BYTES = 4096


@dataclass(frozen=True)
class Region:
    """One row of the region table (engine/regions.json, whose "fields" say what each one means)."""

    code: str
    name: str
    edition: int
    folder: str
    id_letters: str
    aliases: tuple[str, ...] = ()
    scored_structures: tuple[str, ...] = ()
    phantom: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def spellings(self) -> set[str]:
        """Every accepted spelling, normalised as `canonical_region` compares them."""
        return {_normalised(text) for text in (self.code, self.name, self.folder, *self.aliases)}


def _normalised(text: str) -> str:
    return " ".join(text.strip().lower().split())


def load_table(path: Path = TABLE) -> dict[str, Region]:
    """The region table: canonical code -> Region, in the file's order."""
    rows = json.loads(path.read_text(encoding="utf-8"))["regions"]
    table: dict[str, Region] = {}
    for row in rows:
        region = Region(
            code=row["code"],
            name=row["name"],
            edition=int(row["edition"]),
            folder=row["folder"],
            id_letters=row["id_letters"],
            aliases=tuple(row.get("aliases", ())),
            scored_structures=tuple(row.get("scored_structures", ())),
            phantom=dict(row.get("phantom", {})),
        )
        taken = {spelling for other in table.values() for spelling in other.spellings()}
        if region.code in table or region.spellings() & taken:
            raise ValueError(f"{path}: region {region.code!r} repeats a code or spelling of an earlier region")
        table[region.code] = region
    return table


#: Canonical code -> Region: the one list of regions (tests may add one here; everything below reads it).
REGIONS: dict[str, Region] = load_table()


def region_codes(edition: int | None = None) -> tuple[str, ...]:
    """Every canonical code in table order, or only those of one challenge edition (2025: the default set)."""
    return tuple(code for code, row in REGIONS.items() if edition is None or row.edition == edition)


def default_regions() -> tuple[str, ...]:
    """The current challenge's regions (HN, TH, AB): the trainer's and the phantom generator's default."""
    return region_codes(CURRENT_EDITION)


def region_folders() -> str:
    """The released layout's region folder names, for --help: 'HN, TH, AB, brain, pelvis'."""
    return ", ".join(row.folder for row in REGIONS.values())


def region_name(code: str) -> str:
    """The display string of a canonical code (what region.json holds)."""
    return REGIONS[code].name


def _shown(value: object) -> str:
    """A value for an error message: its repr, cut short (a 1 MB string must not be echoed whole)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"


class RegionError(ValueError):
    """The region string is missing or not one the product knows."""


def accepted_values() -> str:
    """Human-readable list of accepted region strings, for error messages and --help."""
    names = [f'"{row.name}"' for row in REGIONS.values()]
    codes = [f'"{row.code}"' for row in REGIONS.values() if _normalised(row.code) != _normalised(row.name)]
    return ", ".join(names + codes) + " (case-insensitive)"


def canonical_region(value: object) -> str:
    """Map any accepted spelling (case-insensitive, surrounding spaces ignored) to its canonical code."""
    if not isinstance(value, str) or not value.strip():
        raise RegionError(f"region is missing or not a string ({_shown(value)}); accepted: {accepted_values()}")
    key = _normalised(value)
    for code, row in REGIONS.items():
        if key in row.spellings():
            return code
    raise RegionError(f"unknown region {_shown(value)}; accepted: {accepted_values()}")


def read_region_json(path: Path) -> str:
    """Read the template's region.json (one bare JSON string) and return the canonical code.

    UTF-8 (with or without a byte-order mark) and UTF-16/32 with a byte-order mark are read (JSON allows them);
    anything else, a file over 4 kB, or JSON nested too deep is one RegionError naming the file.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_REGION_FILE_BYTES + 1)
    except OSError as err:
        raise RegionError(f"{path}: cannot read region file ({err.strerror or err})") from err
    if len(data) > MAX_REGION_FILE_BYTES:
        raise RegionError(
            f'{path}: region file is larger than {MAX_REGION_FILE_BYTES} bytes; expected one string such as "Thorax"'
        )
    try:
        value = json.loads(data)  # bytes: json detects UTF-8/16/32 (BOMs included)
    except UnicodeDecodeError as err:
        raise RegionError(f"{path}: region file is not UTF-8 text ({err.reason} at byte {err.start})") from err
    except RecursionError as err:
        raise RegionError(f'{path}: region file nests too deep; expected one string such as "Thorax"') from err
    except json.JSONDecodeError as err:
        raise RegionError(f'{path}: not valid JSON ({err.msg}); expected one string such as "Thorax"') from err
    try:
        return canonical_region(value)
    except RegionError as err:
        raise RegionError(f"{path}: {err}") from err
