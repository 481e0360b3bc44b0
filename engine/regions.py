"""Anatomical regions: one canonical code per region, and every spelling the challenge uses for it.

SynthRAD2025 passes the region as a bare JSON string ("Head and Neck", "Abdomen", "Thorax"); the released
data names region folders HN/AB/TH; SynthRAD2023 used brain and pelvis. All of them route to one code here so
that the manifest, the trainer and the phantom generator agree on a single key per region.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Canonical code -> the 2025 (or 2023) display string written into region.json.
REGION_NAMES: dict[str, str] = {
    "HN": "Head and Neck",
    "TH": "Thorax",
    "AB": "Abdomen",
    "BRAIN": "Brain",
    "PELVIS": "Pelvis",
}

_ALIASES: dict[str, str] = {
    "hn": "HN",
    "head and neck": "HN",
    "head-and-neck": "HN",
    "head_and_neck": "HN",
    "headandneck": "HN",
    "th": "TH",
    "thorax": "TH",
    "ab": "AB",
    "abdomen": "AB",
    "brain": "BRAIN",
    "pelvis": "PELVIS",
}


#: region.json holds one short string; anything larger is not a region file.
MAX_REGION_FILE_BYTES = 4096


def _shown(value: object) -> str:
    """A value for an error message: its repr, cut short (a 1 MB string must not be echoed whole)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"


class RegionError(ValueError):
    """The region string is missing or not one the product knows."""


def accepted_values() -> str:
    """Human-readable list of accepted region strings, for error messages and --help."""
    shown = [f'"{name}"' for name in REGION_NAMES.values()] + [f'"{code}"' for code in ("HN", "TH", "AB")]
    return ", ".join(shown) + " (case-insensitive)"


def canonical_region(value: object) -> str:
    """Map any accepted spelling (case-insensitive, surrounding spaces ignored) to its canonical code."""
    if not isinstance(value, str) or not value.strip():
        raise RegionError(f"region is missing or not a string ({_shown(value)}); accepted: {accepted_values()}")
    key = " ".join(value.strip().lower().split())
    code = _ALIASES.get(key)
    if code is None:
        raise RegionError(f"unknown region {_shown(value)}; accepted: {accepted_values()}")
    return code


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
