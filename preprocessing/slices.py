"""In-plane resampling, padding to the network's stride, and lazy 2.5D slice stacks in batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

SPACING_TOLERANCE = 1e-3  # mm: closer than this counts as the model's spacing (no resampling)


def needs_resampling(spacing_xy: tuple[float, float], target_xy: tuple[float, float] | None) -> bool:
    """Resample only when a target is set and the input differs from it."""
    return target_xy is not None and any(abs(a - b) > SPACING_TOLERANCE for a, b in zip(spacing_xy, target_xy))


def resample_inplane(
    volume: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    target_xy: tuple[float, float],
    size_xy: tuple[int, int] | None = None,
) -> np.ndarray:
    """Linear in-plane resampling of a (z, y, x) float32 volume; slices (z) stay where they are.

    Both grids share the first voxel's centre. `size_xy` forces the output size (used to go back exactly to the
    input grid); otherwise it covers the same extent.
    """
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    if size_xy is None:
        size_xy = tuple(
            max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize()[:2], spacing_xyz[:2], target_xy)
        )
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing((float(target_xy[0]), float(target_xy[1]), float(spacing_xyz[2])))
    resampler.SetSize((int(size_xy[0]), int(size_xy[1]), image.GetSize()[2]))
    resampler.SetOutputOrigin(image.GetOrigin())
    resampler.SetOutputDirection(image.GetDirection())
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampler.SetUseNearestNeighborExtrapolator(True)
    return sitk.GetArrayFromImage(resampler.Execute(image))


@dataclass(frozen=True)
class Padding:
    """Rows/columns added before and after in y and x."""

    y: tuple[int, int]
    x: tuple[int, int]

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Undo the padding on the last two axes."""
        height, width = array.shape[-2:]
        return array[..., self.y[0] : height - self.y[1], self.x[0] : width - self.x[1]]


def pad_to_multiple(volume: np.ndarray, multiple: int, value: float) -> tuple[np.ndarray, Padding]:
    """Pad y and x up to a multiple of the network's stride, centred (floor half before)."""
    pads = []
    for size in volume.shape[1:]:
        total = (-size) % multiple
        pads.append((total // 2, total - total // 2))
    padding = Padding(y=pads[0], x=pads[1])
    if not any(pads[0] + pads[1]):
        return volume, padding
    return np.pad(volume, ((0, 0), pads[0], pads[1]), mode="constant", constant_values=value), padding


def stack_indices(num_slices: int, context_slices: int, centres: np.ndarray) -> np.ndarray:
    """Slice indices [len(centres), context] of each centre's neighbours; edges repeat the end slice."""
    half = context_slices // 2
    offsets = np.arange(-half, half + 1)
    return np.clip(centres[:, None] + offsets[None, :], 0, num_slices - 1)


def batch_centres(num_slices: int, batch_size: int) -> list[np.ndarray]:
    """The centre slice indices of each batch, in order."""
    return [np.arange(start, min(start + batch_size, num_slices)) for start in range(0, num_slices, batch_size)]


def slice_stacks(volume: np.ndarray, context_slices: int, centres: np.ndarray) -> np.ndarray:
    """float32[len(centres), context, H, W]: each centre slice with its neighbours (a copy)."""
    return volume[stack_indices(volume.shape[0], context_slices, centres)]


def iter_slice_batches(
    volume: np.ndarray, context_slices: int, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (centre slice indices, float32[B, context, H, W] stacks), built only when asked for."""
    for centres in batch_centres(volume.shape[0], batch_size):
        yield centres, slice_stacks(volume, context_slices, centres)
