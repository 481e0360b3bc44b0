"""Body mask the way the SynthRAD organisers describe theirs, and the crop to the field of view.

Steps (shared/docs/synthrad.md, section 2): threshold the MR between its 2.5th and 97.5th percentile, clean it
with a small morphological opening, keep the largest connected component, fill holes, dilate 10 voxels
in-plane and limit the result to the MR field of view. The organisers' exact threshold rule and structuring
elements are not published; the choices here are stated in `body_mask`'s docstring.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: Threshold position between the 2.5th and 97.5th percentiles of the MR inside the field of view.
THRESHOLD_FRACTION = 0.08


def _shift_or(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """m OR m shifted by (dy, dx) in-plane (no wrap-around)."""
    out = m.copy()
    ny, nx = m.shape[1:]
    ys = slice(max(dy, 0), ny + min(dy, 0))
    yd = slice(max(-dy, 0), ny + min(-dy, 0))
    xs = slice(max(dx, 0), nx + min(dx, 0))
    xd = slice(max(-dx, 0), nx + min(-dx, 0))
    out[:, ys, xs] |= m[:, yd, xd]
    return out


def _shifted(m: np.ndarray, oy: int, ox: int) -> np.ndarray:
    """m moved by (oy, ox) in-plane, zeros shifted in."""
    res = np.zeros_like(m)
    ny, nx = m.shape[1:]
    ys = slice(max(oy, 0), ny + min(oy, 0))
    yd = slice(max(-oy, 0), ny + min(-oy, 0))
    xs = slice(max(ox, 0), nx + min(ox, 0))
    xd = slice(max(-ox, 0), nx + min(-ox, 0))
    res[:, ys, xs] = m[:, yd, xd]
    return res


def _segment(m: np.ndarray, dy: int, dx: int, k: int) -> np.ndarray:
    """Dilate by the symmetric segment {-k..k} x (dy, dx) with O(log k) shifted ORs."""
    if k <= 0:
        return m
    acc, covered, step = m, 0, 1
    while covered < 2 * k:  # dilation by {0..2k}: each pass doubles the covered span
        s = min(step, 2 * k - covered)
        acc = _shift_or(acc, s * dy, s * dx)
        covered += s
        step *= 2
    return _shifted(acc, -k * dy, -k * dx)


def dilate_disk_xy(mask: np.ndarray, radius: int) -> np.ndarray:
    """In-plane dilation by a regular octagon of inradius `radius` (a disk to within one voxel).

    The octagon is the Minkowski sum of four segments (0, 90, 45, 135 degrees), so the cost is a few shifted
    ORs per segment instead of a 2-D structuring element of (2r+1)^2 voxels.
    """
    if radius <= 0:
        return mask.astype(bool, copy=True)
    if radius <= 3:  # too small for the octagon decomposition: use the exact digital disk
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        return ndimage.binary_dilation(mask, structure=(yy * yy + xx * xx <= radius * radius)[None])
    b = int(round(radius / (2 + math.sqrt(2))))
    a = radius - 2 * b
    m = mask.astype(bool, copy=True)
    m = _segment(m, 0, 1, a)
    m = _segment(m, 1, 0, a)
    m = _segment(m, 1, 1, b)
    m = _segment(m, 1, -1, b)
    return m


def _cross_erode(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[:, 1:, :] &= m[:, :-1, :]
    out[:, :-1, :] &= m[:, 1:, :]
    out[:, :, 1:] &= m[:, :, :-1]
    out[:, :, :-1] &= m[:, :, 1:]
    out[:, 0, :] = out[:, -1, :] = False
    out[:, :, 0] = out[:, :, -1] = False
    return out


def _cross_dilate(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[:, 1:, :] |= m[:, :-1, :]
    out[:, :-1, :] |= m[:, 1:, :]
    out[:, :, 1:] |= m[:, :, :-1]
    out[:, :, :-1] |= m[:, :, 1:]
    return out


def fill_holes_xy(m: np.ndarray) -> np.ndarray:
    """Fill, slice by slice, every background region that does not reach the slice's border."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    lab, n = ndimage.label(~m, structure=structure)
    if n == 0:
        return m.copy()
    border = np.zeros(n + 1, dtype=bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        border[np.unique(edge)] = True
    border[0] = True  # label 0 is the foreground
    return ~border[lab] | m


def largest_component(m: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(m)
    if n <= 1:
        return m.copy()
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == int(counts.argmax())


def body_mask(mr: np.ndarray, fov: np.ndarray, dilate_xy: int = 10, open_iter: int = 2) -> np.ndarray:
    """Organiser-style body mask (bool) from an MR volume and its field-of-view mask.

    Threshold: 2.5th percentile + THRESHOLD_FRACTION x (97.5th - 2.5th), percentiles over the field of view;
    morphology: in-plane opening by a diamond of radius `open_iter` (4-neighbour cross applied `open_iter` times),
    which removes background noise specks; largest 3-D component (6-connected); holes filled
    per slice; in-plane dilation by `dilate_xy` voxels (octagon); AND field of view.
    """
    vals = mr[fov]
    if vals.size == 0:
        return np.zeros(mr.shape, dtype=bool)
    step = max(1, vals.size // 2_000_000)
    lo, hi = np.percentile(vals[::step], [2.5, 97.5])
    thr = lo + THRESHOLD_FRACTION * (hi - lo)
    m = (mr > thr) & fov
    for _ in range(open_iter):
        m = _cross_erode(m)
    for _ in range(open_iter):
        m = _cross_dilate(m)
    if not m.any():
        return m
    m = largest_component(m)
    m = fill_holes_xy(m)
    m = dilate_disk_xy(m, dilate_xy)
    return m & fov


def crop_box(mask: np.ndarray, margin_xy: int, margin_z: int) -> tuple[slice, slice, slice] | None:
    """Index ranges of the mask's bounding box grown by the margins (may extend beyond the array)."""
    if not mask.any():
        return None
    out = []
    for axis, margin in ((0, margin_z), (1, margin_xy), (2, margin_xy)):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        out.append(slice(int(idx[0]) - margin, int(idx[-1]) + 1 + margin))
    return tuple(out)


def take(a: np.ndarray, box: tuple[slice, slice, slice], fill: float) -> np.ndarray:
    """a[box] where the box may reach outside a (padded with `fill`)."""
    shape = tuple(s.stop - s.start for s in box)
    out = np.full(shape, fill, dtype=a.dtype)
    src, dst = [], []
    for s, n in zip(box, a.shape):
        lo, hi = max(s.start, 0), min(s.stop, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s.start, hi - s.start))
    out[tuple(dst)] = a[tuple(src)]
    return out
