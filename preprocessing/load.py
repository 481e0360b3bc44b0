"""Reading the MR and its body mask with SimpleITK, and every check the pipeline relies on afterwards.

After `load_mr`, `load_mask` and `check_contrast` the MR is a finite, scalar, 3-D image with plausible spacing and
some contrast inside the body, and the mask is a non-empty uint8 array on exactly the MR's voxel grid; later
stages never re-check.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from preprocessing.errors import CaseError
from preprocessing.inspect import ImageFacts, check_spacing, image_io_for, inspect_image

LOG = logging.getLogger(__name__)

#: A mask whose voxel centres all lie within this many MR voxels (along every MR axis) of the MR voxel centres
#: of the same index is resampled onto the MR grid (nearest neighbour, a warning in results.json); farther, or
#: another size, is refused. Within half a voxel, nearest neighbour keeps every voxel where it was.
MASK_GRID_TOLERANCE_VOXELS = 0.5


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
        # any axes beyond the third, and the components, count as more slices: every header gets a number
        nx, ny = (tuple(facts.size) + (1, 1))[:2]
        nz = math.prod(facts.size[2:]) * facts.components
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
    path: Path,
    what: str,
    budget: int | None = None,
    estimate: Callable[[ImageFacts], int] | None = None,
    root: Path | None = None,
) -> sitk.Image:
    """Read a scalar 3-D image; any other image (or none) is a CaseError naming the file.

    The file is inspected first (preprocessing.inspect): a header that lies about its data, data outside the
    case folder (or, with `root`, a link out of the input folder), a 4-D or vector header, or a size whose working
    memory exceeds the budget are refused before anything is allocated.
    """
    path = Path(path)
    inspect_image(
        path, what, memory_budget_bytes() if budget is None else budget, estimate or working_bytes(None), root
    )
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
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
    check_spacing(path, what, image.GetSpacing())
    return image


def _check_finite(path: Path, what: str, array: np.ndarray) -> None:
    if np.issubdtype(array.dtype, np.floating):
        bad = np.count_nonzero(~np.isfinite(array))
        if bad:
            raise CaseError(path, f"{what} has {bad} NaN/inf voxel(s)")


def load_mr(
    path: Path,
    budget: int | None = None,
    spacing_xy_mm: tuple[float, float] | None = None,
    root: Path | None = None,
) -> tuple[sitk.Image, np.ndarray]:
    """The MR image (for its geometry) and its voxels as float32 (z, y, x).

    spacing_xy_mm (the model's in-plane spacing) enters the memory estimate: resampling can grow a volume.
    root: the input folder the file must lie in (None: no such folder, the user named the file).
    """
    image = read_image(path, "MR", budget, working_bytes(spacing_xy_mm), root)
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


def _grid_text(image: sitk.Image) -> str:
    numbers = lambda values: " ".join(f"{v:.4g}" for v in values)  # noqa: E731
    return (
        f"size {' x '.join(map(str, image.GetSize()))}, spacing {numbers(image.GetSpacing())} mm, "
        f"origin ({numbers(image.GetOrigin())}) mm, direction ({numbers(image.GetDirection())})"
    )


def _mask_voxels_in_mr(mask: sitk.Image, mr: sitk.Image, corners: list[tuple[float, ...]]) -> list[tuple]:
    """Mask grid positions (continuous indices) as continuous indices of the MR grid."""
    return [
        mr.TransformPhysicalPointToContinuousIndex(mask.TransformContinuousIndexToPhysicalPoint(corner))
        for corner in corners
    ]


def grid_offset_voxels(mask: sitk.Image, mr: sitk.Image) -> float:
    """How far, in MR voxels along any MR axis, a mask voxel centre lies from the MR voxel centre of the same index.

    The map between the grids is affine, so the largest offset over the whole grid is found at a corner.
    """
    corners = list(itertools.product(*[(0.0, float(n - 1)) for n in mask.GetSize()]))
    return max(
        max(abs(m - c) for m, c in zip(mapped, corner))
        for mapped, corner in zip(_mask_voxels_in_mr(mask, mr, corners), corners)
    )


def _overlaps(mask: sitk.Image, mr: sitk.Image) -> bool:
    """Whether the mask's field of view and the MR's intersect at all (bounding boxes in MR index space)."""
    corners = list(itertools.product(*[(-0.5, n - 0.5) for n in mask.GetSize()]))
    mapped = _mask_voxels_in_mr(mask, mr, corners)
    return all(
        min(p[axis] for p in mapped) < n - 0.5 and max(p[axis] for p in mapped) > -0.5
        for axis, n in enumerate(mr.GetSize())
    )


def check_mask_grid(path: Path, mask: sitk.Image, mr: sitk.Image) -> str | None:
    """None when the mask is on the MR's grid; a warning when it is within the tolerance (it is then resampled);
    a CaseError naming both grids when it is of another size or farther off."""
    if same_grid(mask, mr):
        return None
    both = f"mask {_grid_text(mask)}; MR {_grid_text(mr)}"
    apart = "" if _overlaps(mask, mr) else "; the mask does not overlap the MR at all"
    if mask.GetSize() != mr.GetSize():
        raise CaseError(
            path,
            f"mask is on another grid than the MR (size {' x '.join(map(str, mask.GetSize()))} vs "
            f"{' x '.join(map(str, mr.GetSize()))}{apart}): {both}; a mask on the MR's grid is required",
        )
    offset = grid_offset_voxels(mask, mr)
    if offset > MASK_GRID_TOLERANCE_VOXELS:
        raise CaseError(
            path,
            f"mask is on another grid than the MR (its voxels lie up to {offset:.3g} MR voxels from the MR's, "
            f"tolerance {MASK_GRID_TOLERANCE_VOXELS:g}{apart}): {both}; a mask on the MR's grid is required",
        )
    return (
        f"{path}: mask grid differs from the MR grid by up to {offset:.2f} MR voxel (within the "
        f"{MASK_GRID_TOLERANCE_VOXELS:g} voxel tolerance); resampled onto the MR grid with nearest neighbour: {both}"
    )


def load_mask(
    path: Path, mr: sitk.Image, budget: int | None = None, root: Path | None = None
) -> tuple[np.ndarray, list[str]]:
    """The body mask as uint8 (z, y, x) on the MR grid, and the warnings to record for the case.

    A mask of another size, or whose grid lies more than MASK_GRID_TOLERANCE_VOXELS from the MR's, is refused; one
    within it is resampled onto the MR grid with nearest neighbour, with a warning. An empty mask is an error.
    """
    image = read_image(path, "mask", budget, root=root)
    _check_finite(path, "mask", sitk.GetArrayViewFromImage(image))
    if not np.count_nonzero(sitk.GetArrayViewFromImage(image)):
        raise CaseError(path, "mask is empty (no voxel > 0)")
    warnings = []
    warning = check_mask_grid(path, image, mr)
    if warning is not None:
        LOG.warning("%s", warning)
        warnings.append(warning)
        binary = sitk.Cast(image > 0, sitk.sitkUInt8) if image.GetPixelID() != sitk.sitkUInt8 else image > 0
        image = sitk.Resample(binary, mr, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    mask = (sitk.GetArrayViewFromImage(image) > 0).astype(np.uint8)
    if not mask.any():
        raise CaseError(path, "mask is empty on the MR grid")
    return mask, warnings


def check_contrast(path: Path, volume: np.ndarray, mask: np.ndarray) -> None:
    """Refuse an MR with zero variance inside the body mask (all zero, or constant): a model would invent anatomy.

    Slice by slice, so no copy of the in-mask voxels of a 300 MB volume is made.
    """
    lowest, highest, count = math.inf, -math.inf, 0
    for plane, inside in zip(volume, mask):
        values = plane[inside > 0]
        if values.size:
            lowest, highest, count = (
                min(lowest, float(values.min())),
                max(highest, float(values.max())),
                count + values.size,
            )
    if count and highest <= lowest:
        raise CaseError(
            path,
            f"MR has zero variance inside the body mask (all {count} voxels are {lowest:g}): no anatomy to translate",
        )
