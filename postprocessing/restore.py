"""Undo every preprocessing step on the generator's output, then make it a valid CT."""

from __future__ import annotations

import numpy as np

from modelspec import HU_MAX, HU_MIN, ModelSpec, normalised_to_hu
from preprocessing import Prepared
from preprocessing.slices import resample_inplane


def to_input_grid(values: np.ndarray, prepared: Prepared, window: tuple[float, float] | None = None) -> np.ndarray:
    """(slices, H, W) model-space values -> (z, y, x) float32 on the input MR grid.

    With `window`, values are normalised CT and become HU first; without it they are already in HU (used for
    the uncertainty map). Order: unpad, back to the input spacing, back to the input orientation.
    """
    out = np.ascontiguousarray(prepared.padding.crop(values), dtype=np.float32)
    if window is not None:
        normalised_to_hu(out, window)
    if prepared.resampled:
        out = resample_inplane(
            out, prepared.volume_spacing, prepared.canonical_spacing[:2], size_xy=prepared.canonical_size_xy
        )
    if not prepared.reorientation.is_identity:
        out = np.ascontiguousarray(prepared.reorientation.invert(out))
    if out.shape != prepared.geometry.size[::-1]:
        raise RuntimeError(f"restored shape {out.shape} != input grid {prepared.geometry.size[::-1]}")
    return out


def finalise_hu(hu: np.ndarray, mask: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Fill outside the body (air, so TotalSegmentator sees air), clip to the CT range, cast to the output dtype."""
    hu[mask == 0] = np.float32(spec.outside_fill_hu)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    if spec.output_dtype == "int16":
        np.rint(hu, out=hu)
        return hu.astype(np.int16)
    return hu
