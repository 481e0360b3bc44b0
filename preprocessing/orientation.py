"""Bring a volume to the canonical orientation (identity direction) by axis permutation and flips only.

The networks see axial slices in one orientation whatever the scanner wrote. A permutation and flips move no
voxel value, so the inverse is exact: the sCT lands on the input grid voxel for voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reorientation:
    """How a (z, y, x) array was permuted and flipped; `apply` and `invert` are exact inverses."""

    axes: tuple[int, int, int]
    flips: tuple[int, ...]

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.axes)
        return np.flip(out, self.flips) if self.flips else out

    def invert(self, array: np.ndarray) -> np.ndarray:
        out = np.flip(array, self.flips) if self.flips else array
        return np.transpose(out, tuple(int(i) for i in np.argsort(self.axes)))

    def spacing(self, spacing_xyz: tuple[float, float, float]) -> tuple[float, float, float]:
        """Spacing (x, y, z order) of the reoriented volume."""
        zyx = [spacing_xyz[2 - old] for old in self.axes]
        return (zyx[2], zyx[1], zyx[0])

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not self.flips


def canonical_reorientation(direction: tuple[float, ...]) -> Reorientation:
    """The permutation and flips that bring an image with this direction closest to the identity direction.

    Each image axis is matched to the physical axis it points along most (greedy on |cosine|, so oblique
    directions still get a unique match); a negative cosine means the axis is flipped.
    """
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)  # rows: physical x, y, z; columns: index axes
    physical_of_index = [-1, -1, -1]
    taken: set[int] = set()
    for flat in np.argsort(-np.abs(matrix), axis=None):
        phys, index = divmod(int(flat), 3)
        if physical_of_index[index] == -1 and phys not in taken:
            physical_of_index[index] = phys
            taken.add(phys)
    index_of_physical = {phys: index for index, phys in enumerate(physical_of_index)}
    # numpy axis k of the new array is physical axis 2 - k, taken from old numpy axis 2 - index.
    axes = tuple(2 - index_of_physical[2 - k] for k in range(3))
    flips = tuple(k for k in range(3) if matrix[2 - k, index_of_physical[2 - k]] < 0)
    return Reorientation(axes=axes, flips=flips)
