"""Reading the MR and its body mask with SimpleITK, and every check the pipeline relies on afterwards.

After `load_mr` and `load_mask` the MR is a finite, scalar, 3-D image and the mask is a non-empty uint8 array
on exactly the MR's voxel grid; later stages never re-check.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from preprocessing.errors import CaseError

LOG = logging.getLogger(__name__)

#: A mask that keeps less than this share of its foreground after resampling onto the MR grid is rejected.
MIN_MASK_OVERLAP = 0.5


def read_image(path: Path, what: str) -> sitk.Image:
    """Read a scalar 3-D image; any other image (or none) is a CaseError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CaseError(path, f"{what} file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise CaseError(path, f"cannot read {what}: corrupt, truncated or not an image") from err
    if image.GetDimension() != 3:
        raise CaseError(path, f"{what} is {image.GetDimension()}-D; a 3-D volume is required")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(
            path, f"{what} is a vector image ({image.GetNumberOfComponentsPerPixel()} components); a scalar image is required"
        )
    if min(image.GetSize()) < 1:
        raise CaseError(path, f"{what} is empty (size {image.GetSize()})")
    return image


def _check_finite(path: Path, what: str, array: np.ndarray) -> None:
    if np.issubdtype(array.dtype, np.floating):
        bad = np.count_nonzero(~np.isfinite(array))
        if bad:
            raise CaseError(path, f"{what} has {bad} NaN/inf voxel(s)")


def load_mr(path: Path) -> tuple[sitk.Image, np.ndarray]:
    """The MR image (for its geometry) and its voxels as float32 (z, y, x)."""
    image = read_image(path, "MR")
    voxels = sitk.GetArrayViewFromImage(image)
    _check_finite(path, "MR", voxels)
    return image, voxels.astype(np.float32)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether two images share size, spacing, origin and direction (to within float noise of the header)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5, atol=1e-6)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-3)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-4)
    )


def load_mask(path: Path, mr: sitk.Image) -> np.ndarray:
    """The body mask as uint8 (z, y, x) on the MR grid.

    A mask on another grid is resampled onto the MR grid with nearest neighbour (with a warning); one that then
    keeps less than half of its body, or is empty, is an error.
    """
    image = read_image(path, "mask")
    _check_finite(path, "mask", sitk.GetArrayViewFromImage(image))
    foreground = int(np.count_nonzero(sitk.GetArrayViewFromImage(image)))
    mask_volume = foreground * float(np.prod(image.GetSpacing()))
    if foreground == 0:
        raise CaseError(path, "mask is empty (no voxel > 0)")
    if not same_grid(image, mr):
        LOG.warning(
            "%s: mask grid differs from the MR grid (size %s vs %s, spacing %s vs %s); resampling it onto the MR "
            "grid with nearest neighbour",
            path, image.GetSize(), mr.GetSize(),
            tuple(round(s, 4) for s in image.GetSpacing()), tuple(round(s, 4) for s in mr.GetSpacing()),
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
