"""Reading the MR and its body mask with SimpleITK, and every check the pipeline relies on afterwards.

After `load_mr` and `load_mask` the MR is a finite, scalar, 3-D image and the mask is a non-empty uint8 array
on exactly the MR's voxel grid; later stages never re-check.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from preprocessing.errors import CaseError
from preprocessing.inspect import ImageFacts, image_io_for, inspect_image

LOG = logging.getLogger(__name__)

#: A mask that keeps less than this share of its foreground after resampling onto the MR grid is rejected.
MIN_MASK_OVERLAP = 0.5


#: Default memory budget of one case (the grand-challenge template's limit); SCT_MEMORY_BUDGET_GB overrides it.
DEFAULT_MEMORY_BUDGET_GB = 4.0
#: Bytes per voxel on the input grid (the image as read, float32 MR, mask, float32 sCT, int16 output, writer copy)
#: and on the model grid (the prepared volume, the generated mean, resampling and padding temporaries).
INPUT_GRID_BYTES_PER_VOXEL = 20
MODEL_GRID_BYTES_PER_VOXEL = 24


def memory_budget_bytes(budget_gb: float | None = None) -> int:
    """The budget in bytes: the argument, else SCT_MEMORY_BUDGET_GB, else 4 GB."""
    if budget_gb is None:
        raw = os.environ.get("SCT_MEMORY_BUDGET_GB", "")
        try:
            budget_gb = float(raw) if raw else DEFAULT_MEMORY_BUDGET_GB
        except ValueError:
            LOG.warning("SCT_MEMORY_BUDGET_GB=%r is not a number; using %g GB", raw[:40], DEFAULT_MEMORY_BUDGET_GB)
            budget_gb = DEFAULT_MEMORY_BUDGET_GB
    return int(budget_gb * 2**30)


def working_bytes(spacing_xy_mm: tuple[float, float] | None) -> Callable[[ImageFacts], int]:
    """Estimated peak bytes to process an image of the given size/spacing with a model at `spacing_xy_mm`."""

    def estimate(facts: ImageFacts) -> int:
        nx, ny, nz = facts.size[:3]
        voxels = nx * ny * nz
        model_voxels = voxels
        if spacing_xy_mm is not None and len(facts.spacing) >= 2:
            sx, sy = (abs(v) for v in facts.spacing[:2])
            model_voxels = nz * math.ceil(nx * sx / spacing_xy_mm[0]) * math.ceil(ny * sy / spacing_xy_mm[1])
        return (
            voxels * (INPUT_GRID_BYTES_PER_VOXEL + facts.bytes_per_component)
            + model_voxels * MODEL_GRID_BYTES_PER_VOXEL
        )

    return estimate


def read_image(
    path: Path, what: str, budget: int | None = None, estimate: Callable[[ImageFacts], int] | None = None
) -> sitk.Image:
    """Read a scalar 3-D image; any other image (or none) is a CaseError naming the file.

    The file is inspected first (preprocessing.inspect): a header that lies about its data, data outside the
    case folder, or a size whose working memory exceeds the budget are refused before anything is allocated.
    """
    path = Path(path)
    inspect_image(path, what, memory_budget_bytes() if budget is None else budget, estimate or working_bytes(None))
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        if image_io_for(path):
            reader.SetImageIO(image_io_for(path))
        image = reader.Execute()
    except RuntimeError as err:
        raise CaseError(path, f"cannot read {what}: corrupt, truncated or not an image") from err
    if image.GetDimension() != 3:
        raise CaseError(path, f"{what} is {image.GetDimension()}-D; a 3-D volume is required")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(
            path,
            f"{what} is a vector image ({image.GetNumberOfComponentsPerPixel()} components); a scalar image is required",
        )
    if min(image.GetSize()) < 1:
        raise CaseError(path, f"{what} is empty (size {image.GetSize()})")
    return image


def _check_finite(path: Path, what: str, array: np.ndarray) -> None:
    if np.issubdtype(array.dtype, np.floating):
        bad = np.count_nonzero(~np.isfinite(array))
        if bad:
            raise CaseError(path, f"{what} has {bad} NaN/inf voxel(s)")


def load_mr(
    path: Path, budget: int | None = None, spacing_xy_mm: tuple[float, float] | None = None
) -> tuple[sitk.Image, np.ndarray]:
    """The MR image (for its geometry) and its voxels as float32 (z, y, x).

    spacing_xy_mm (the model's in-plane spacing) enters the memory estimate: resampling can grow a volume.
    """
    image = read_image(path, "MR", budget, working_bytes(spacing_xy_mm))
    voxels = sitk.GetArrayViewFromImage(image)
    _check_finite(path, "MR", voxels)
    if voxels.dtype.itemsize > 4 and np.issubdtype(voxels.dtype, np.floating):
        largest = float(np.abs(voxels).max())
        if largest > np.finfo(np.float32).max:
            raise CaseError(path, f"MR has values up to {largest:.3g}, beyond float32's range (the model's input type)")
    return image, voxels.astype(np.float32)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether two images share size, spacing, origin and direction (to within float noise of the header)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5, atol=1e-6)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-3)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-4)
    )


def load_mask(path: Path, mr: sitk.Image, budget: int | None = None) -> np.ndarray:
    """The body mask as uint8 (z, y, x) on the MR grid.

    A mask on another grid is resampled onto the MR grid with nearest neighbour (with a warning); one that then
    keeps less than half of its body, or is empty, is an error.
    """
    image = read_image(path, "mask", budget)
    _check_finite(path, "mask", sitk.GetArrayViewFromImage(image))
    foreground = int(np.count_nonzero(sitk.GetArrayViewFromImage(image)))
    mask_volume = foreground * float(np.prod(image.GetSpacing()))
    if foreground == 0:
        raise CaseError(path, "mask is empty (no voxel > 0)")
    if not same_grid(image, mr):
        LOG.warning(
            "%s: mask grid differs from the MR grid (size %s vs %s, spacing %s vs %s); resampling it onto the MR "
            "grid with nearest neighbour",
            path,
            image.GetSize(),
            mr.GetSize(),
            tuple(round(s, 4) for s in image.GetSpacing()),
            tuple(round(s, 4) for s in mr.GetSpacing()),
        )
        binary = sitk.Cast(image > 0, sitk.sitkUInt8) if image.GetPixelID() != sitk.sitkUInt8 else image > 0
        image = sitk.Resample(binary, mr, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        kept_volume = np.count_nonzero(sitk.GetArrayViewFromImage(image)) * float(np.prod(mr.GetSpacing()))
        if kept_volume < MIN_MASK_OVERLAP * mask_volume:
            raise CaseError(
                path,
                f"mask does not overlap the MR grid (only {100 * kept_volume / mask_volume:.0f}% of the mask lies "
                f"inside the MR field of view; mask and MR are on different grids)",
            )
    mask = (sitk.GetArrayViewFromImage(image) > 0).astype(np.uint8)
    if not mask.any():
        raise CaseError(path, "mask is empty on the MR grid")
    return mask
