"""Case -> Prepared: read MR and mask, validate, reorient, normalise, resample in-plane, pad.

Everything needed to undo these steps travels in `Prepared`, so postprocessing puts the sCT back on the input
grid voxel for voxel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from modelspec import ModelSpec
from preprocessing.errors import CaseError
from preprocessing.load import check_contrast, load_mask, load_mr
from preprocessing.normalise import normalise_mr
from preprocessing.orientation import Reorientation, canonical_reorientation
from preprocessing.slices import Padding, needs_resampling, pad_to_multiple, resample_inplane

LOG = logging.getLogger(__name__)

__all__ = ["CaseError", "Geometry", "Prepared", "prepare_case", "to_model_space"]


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of an image: what the output must reproduce exactly."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def stamp(self, image: sitk.Image) -> sitk.Image:
        """Write this geometry into an image of the same size."""
        if image.GetSize() != self.size:
            raise ValueError(f"image size {image.GetSize()} != grid size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass
class Prepared:
    """A case ready for the generator, with the record of how to undo each step."""

    geometry: Geometry  # the input MR's grid
    mask: np.ndarray  # uint8 (z, y, x) on the input grid
    volume: np.ndarray  # float32 (slices, H, W): normalised, canonical orientation, model spacing, padded
    reorientation: Reorientation
    canonical_spacing: tuple[float, float, float]  # x, y, z after reorientation, before resampling
    canonical_size_xy: tuple[int, int]  # x, y after reorientation, before resampling
    resampled: bool
    volume_spacing: tuple[float, float, float]  # x, y, z of `volume` (the model's in-plane spacing if resampled)
    padding: Padding
    warnings: list[str] = field(default_factory=list)  # what was repaired on the way (a mask resampled), per case


def prepare_case(
    mr_path: Path,
    mask_path: Path,
    spec: ModelSpec,
    budget_bytes: int | None = None,
    root: Path | None = None,
    stage: Callable[[str], AbstractContextManager[object]] | None = None,
) -> Prepared:
    """Read and check the inputs, then bring the MR into the model's space as the manifest entry says.

    budget_bytes: the memory budget of the case (None: SCT_MEMORY_BUDGET_GB or 4 GB); bigger cases are refused.
    root: the input folder both files must lie in (links out of it are refused); None when the user named them.
    stage: times the two parts, `stage("read")` and `stage("prepare")` (pipeline/timing.py); None: untimed.
    """
    stage = stage or _untimed
    with stage("read"):
        mr_image, volume = load_mr(mr_path, budget_bytes, spec.spacing_xy_mm, root)
        mask, warnings = load_mask(mask_path, mr_image, budget_bytes, root)
        check_contrast(mr_path, volume, mask)
        geometry = Geometry.of(mr_image)
        del mr_image
    with stage("prepare"):
        return _to_model_space(volume, mask, geometry, warnings, spec)


def _untimed(name: str) -> AbstractContextManager[object]:
    return nullcontext()


def _to_model_space(
    volume: np.ndarray, mask: np.ndarray, geometry: Geometry, warnings: list[str], spec: ModelSpec
) -> Prepared:
    """Reorient, normalise in the mask, resample in-plane and pad the MR read by prepare_case."""
    reorientation = canonical_reorientation(geometry.direction)
    if not reorientation.is_identity:
        volume = np.ascontiguousarray(reorientation.apply(volume))
    canonical_mask = reorientation.apply(mask)
    spacing = reorientation.spacing(geometry.spacing)
    size_xy = (volume.shape[2], volume.shape[1])
    normalise_mr(volume, canonical_mask, spec.normalisation)
    del canonical_mask

    resampled = needs_resampling(spacing[:2], spec.spacing_xy_mm)
    volume_spacing = spacing
    if resampled:
        volume_spacing = (*spec.spacing_xy_mm, spacing[2])
        LOG.info("resampling in-plane from %.3f x %.3f mm to %.3f x %.3f mm", *spacing[:2], *spec.spacing_xy_mm)
        volume = resample_inplane(volume, spacing, spec.spacing_xy_mm)
    volume, padding = pad_to_multiple(volume, spec.divisible_by, spec.normalisation.outside_value)
    return Prepared(
        geometry=geometry,
        mask=mask,
        volume=volume,
        reorientation=reorientation,
        canonical_spacing=spacing,
        canonical_size_xy=size_xy,
        resampled=resampled,
        volume_spacing=volume_spacing,
        padding=padding,
        warnings=warnings,
    )


def to_model_space(array: np.ndarray, prepared: Prepared, pad_value: float, binary: bool = False) -> np.ndarray:
    """Bring another array on the input MR grid (the paired CT, the mask) into the prepared MR's model space.

    The trainer uses this so that CT targets go through exactly the reorientation, resampling and padding the
    MR went through at inference.
    """
    out = np.ascontiguousarray(prepared.reorientation.apply(array), dtype=np.float32)
    if prepared.resampled:
        out = resample_inplane(out, prepared.canonical_spacing, prepared.volume_spacing[:2])
        if binary:
            out = (out > 0.5).astype(np.float32)
    padding = prepared.padding
    if any(padding.y + padding.x):
        out = np.pad(out, ((0, 0), padding.y, padding.x), mode="constant", constant_values=pad_value)
    return out
