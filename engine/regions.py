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


class RegionError(ValueError):
    """The region string is missing or not one the product knows."""


def accepted_values() -> str:
    """Human-readable list of accepted region strings, for error messages and --help."""
    shown = [f'"{name}"' for name in REGION_NAMES.values()] + [f'"{code}"' for code in ("HN", "TH", "AB")]
    return ", ".join(shown) + " (case-insensitive)"


def canonical_region(value: object) -> str:
    """Map any accepted spelling (case-insensitive, surrounding spaces ignored) to its canonical code."""
    if not isinstance(value, str) or not value.strip():
        raise RegionError(f"region is missing or not a string ({value!r}); accepted: {accepted_values()}")
    key = " ".join(value.strip().lower().split())
    code = _ALIASES.get(key)
    if code is None:
        raise RegionError(f"unknown region {value!r}; accepted: {accepted_values()}")
    return code


def read_region_json(path: Path) -> str:
    """Read the template's region.json (one bare JSON string) and return the canonical code."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise RegionError(f"{path}: cannot read region file ({err.strerror or err})") from err
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RegionError(f"{path}: not valid JSON ({err.msg}); expected one string such as \"Thorax\"") from err
    try:
        return canonical_region(value)
    except RegionError as err:
        raise RegionError(f"{path}: {err}") from err
