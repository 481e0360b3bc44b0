"""A label volume on a physical grid, and analytic shapes painted into it inside their bounding boxes only.

Coordinates are millimetres in a body frame that matches DICOM/ITK LPS: x grows to the patient's left, y to the
posterior, z to the superior; z = 0 is the vertex of the head. Arrays are (z, y, x) like SimpleITK's. Every shape
is evaluated with NumPy broadcasting over the sub-grid of its bounding box, so a small structure costs little
however large the volume is; axis-aligned tubes along z cost two full-size operations per slice range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from phantoms.tissues import T, label_set

Vec = Sequence[float]


@dataclass
class Box:
    """Index slices of a bounding box and its broadcastable coordinates (Z: (n,1,1), Y: (1,n,1), X: (1,1,n))."""

    sl: tuple[slice, slice, slice]
    Z: np.ndarray
    Y: np.ndarray
    X: np.ndarray


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix (degrees): yaw about z, then pitch about x, then roll about y; columns are local axes."""
    a, b, c = np.radians([yaw, pitch, roll])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return rz @ rx @ ry


def _pow(u: np.ndarray, p: float) -> np.ndarray:
    """|u|**p with cheap paths for the common integer exponents (float powers are ~10x slower)."""
    if p == 2:
        return u * u
    if p == 4:
        u2 = u * u
        return u2 * u2
    if p == 3:
        return np.abs(u * u * u)
    return np.abs(u) ** p


class Canvas:
    """Label volume plus the coordinates of its voxel centres."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, texture: np.ndarray | None = None) -> None:
        self.x = np.asarray(x, dtype=np.float32)
        self.y = np.asarray(y, dtype=np.float32)
        self.z = np.asarray(z, dtype=np.float32)
        self.labels = np.zeros((self.z.size, self.y.size, self.x.size), dtype=np.uint8)
        self.texture = texture  # smooth N(0,1) field on the same grid (gyri, fat planes, honeycomb), optional
        step = lambda a: float(a[1] - a[0]) if a.size > 1 else 1.0  # noqa: E731
        self.min_step = min(step(self.x), step(self.y))  # in-plane voxel size: the thinnest layer a shape can show
        self.max_step = max(step(self.x), step(self.y))
        self.z_step = step(self.z)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.labels.shape

    def box(self, lo: Vec, hi: Vec) -> Box | None:
        """Sub-grid of voxel centres inside [lo, hi] (x, y, z in mm); None when empty."""
        idx = []
        for axis, a, b in ((self.x, lo[0], hi[0]), (self.y, lo[1], hi[1]), (self.z, lo[2], hi[2])):
            i0 = int(np.searchsorted(axis, a, side="left"))
            i1 = int(np.searchsorted(axis, b, side="right"))
            if i1 <= i0:
                return None
            idx.append(slice(i0, i1))
        sx, sy, sz = idx
        return Box(
            sl=(sz, sy, sx),
            Z=self.z[sz][:, None, None],
            Y=self.y[sy][None, :, None],
            X=self.x[sx][None, None, :],
        )

    def tex(self, box: Box) -> np.ndarray | float:
        """The texture field inside a box (0 when the canvas has none)."""
        return 0.0 if self.texture is None else self.texture[box.sl]

    # ------------------------------------------------------------------------------------------ painting
    def fill(
        self,
        label: int,
        box: Box | None,
        inside: np.ndarray,
        only: Sequence[int] | None = None,
        keep: Sequence[int] | None = None,
    ) -> None:
        """Set `label` where `inside` (broadcastable to the box); `only`: just over these labels; `keep`: never over these."""
        if box is None:
            return
        region = self.labels[box.sl]
        inside = np.broadcast_to(inside, region.shape)
        if only is not None:
            inside = inside & label_set(*only)[region]
        if keep is not None:
            inside = inside & ~label_set(*keep)[region]
        np.copyto(region, np.uint8(label), where=inside)

    # ------------------------------------------------------------------------------------------ shapes
    def superquadric(
        self, c: Vec, r: Vec, rot: np.ndarray | None = None, p: float = 2.0, box: Box | None = None
    ) -> tuple[Box | None, np.ndarray | None]:
        """F = sum |u_i / r_i|^p in the shape's own axes (F <= 1 inside); on `box` when given (nested shells)."""
        c = np.asarray(c, dtype=np.float64)
        r = np.maximum(np.asarray(r, dtype=np.float64), 1e-3)
        if rot is None:
            ext = r
        else:
            ext = np.abs(rot) @ r  # conservative box of the rotated shape
        if box is None:
            box = self.box(c - ext, c + ext)
        if box is None:
            return None, None
        dx, dy, dz = box.X - c[0], box.Y - c[1], box.Z - c[2]
        if rot is None:
            F = _pow(dx / r[0], p) + _pow(dy / r[1], p)
            F = F + _pow(dz / r[2], p)
        else:
            F = None
            for j in range(3):
                u = (rot[0, j] * dx + rot[1, j] * dy) + rot[2, j] * dz
                term = _pow(u / r[j], p)
                F = term if F is None else F + term
        return box, F

    def ellipsoid(
        self,
        label: int,
        c: Vec,
        r: Vec,
        rot: np.ndarray | None = None,
        p: float = 2.0,
        only: Sequence[int] | None = None,
        keep: Sequence[int] | None = None,
        where: Callable[[Box], np.ndarray] | None = None,
    ) -> None:
        """Paint a (super-)ellipsoid; `where(box)` can restrict it further (e.g. below the diaphragm)."""
        box, F = self.superquadric(c, r, rot, p)
        if box is None:
            return
        inside = F <= 1.0
        if where is not None:
            inside = inside & where(box)
        self.fill(label, box, inside, only, keep)

    def bone(
        self,
        c: Vec,
        r: Vec,
        cortex: float,
        rot: np.ndarray | None = None,
        p: float = 2.0,
        outer: int = T.CORTICAL,
        inner: int = T.MARROW,
        only: Sequence[int] | None = None,
        where: Callable[[Box], np.ndarray] | None = None,
    ) -> None:
        """A bone: shell of cortical bone `cortex` mm thick around marrow."""
        cortex = max(cortex, 0.6 * self.min_step)
        self.ellipsoid(outer, c, r, rot, p, only=only, where=where)
        ri = [max(v - cortex, 0.0) for v in r]
        if min(ri) > 0.3 * self.min_step:
            self.ellipsoid(inner, c, ri, rot, p, only=(outer,), where=where)

    def ztube(
        self, z0: float, z1: float, prof: Callable[[np.ndarray], tuple], p: float = 2.0
    ) -> tuple[Box | None, np.ndarray | None]:
        """Tube along z with a super-elliptic cross-section; prof(z) -> (cx, cy, a, b_ant, b_post) arrays.

        b_ant is the semi-axis toward the anterior (y < cy), b_post toward the posterior, so a torso can be
        flatter at the back than at the front.
        """
        lo_z, hi_z = min(z0, z1), max(z0, z1)
        sel = (self.z >= lo_z) & (self.z <= hi_z)
        if not sel.any():
            return None, None
        zs = self.z[sel]
        cx, cy, a, ba, bp = (np.broadcast_to(np.asarray(v, dtype=np.float64), zs.shape) for v in prof(zs))
        ok = (a > 0) & (ba > 0) & (bp > 0)
        if not ok.any():
            return None, None
        lo = (float((cx - a)[ok].min()), float((cy - ba)[ok].min()), float(zs[ok].min()))
        hi = (float((cx + a)[ok].max()), float((cy + bp)[ok].max()), float(zs[ok].max()))
        box = self.box(lo, hi)
        if box is None:
            return None, None
        k = np.nonzero(sel)[0]
        keep = (k >= box.sl[0].start) & (k < box.sl[0].stop)
        cx, cy, a, ba, bp = (v[keep][:, None, None].astype(np.float32) for v in (cx, cy, a, ba, bp))
        a = np.where(a > 0, a, 1e-3)
        u = _pow((box.X - cx) / a, p)  # (nz, 1, nx)
        dy = box.Y - cy
        v = _pow(dy / np.where(dy < 0, np.maximum(ba, 1e-3), np.maximum(bp, 1e-3)), p)  # (nz, ny, 1)
        F = u + v
        F[np.broadcast_to(~((a > 1e-3) & (ba > 0) & (bp > 0)), F.shape)] = np.inf
        return box, F

    def capsule(self, p0: Vec, p1: Vec, r0: float, r1: float) -> tuple[Box | None, np.ndarray | None]:
        """Signed distance (mm) to a segment p0-p1 whose radius goes linearly from r0 to r1 (< 0 inside)."""
        p0 = np.asarray(p0, dtype=np.float64)
        p1 = np.asarray(p1, dtype=np.float64)
        rmax = max(r0, r1)
        box = self.box(np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
        if box is None:
            return None, None
        d = p1 - p0
        L2 = float(d @ d) or 1e-6
        dx, dy, dz = box.X - p0[0], box.Y - p0[1], box.Z - p0[2]
        t = np.clip((dx * (d[0] / L2) + dy * (d[1] / L2)) + dz * (d[2] / L2), 0.0, 1.0)
        qx = dx - t * d[0]
        qy = dy - t * d[1]
        qz = dz - t * d[2]
        dist = np.sqrt((qx * qx + qy * qy) + qz * qz)
        return box, dist - (r0 + t * (r1 - r0))

    def tube(
        self,
        points: Sequence[Vec],
        radii: Sequence[float] | float,
        layers: Sequence[tuple[float, int]],
        only: Sequence[int] | None = None,
        keep: Sequence[int] | None = None,
    ) -> None:
        """A tube through `points`; layers = [(offset_mm, label), ...] painted outer to inner over all segments.

        Offset 0 is the tube surface, a positive offset paints a core that much thinner (cortex then marrow,
        wall then lumen); each layer is painted along the whole tube before the next, so joints stay clean.
        """
        pts = [np.asarray(p, dtype=np.float64) for p in points]
        rad = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),))
        segs = [self.capsule(pts[i], pts[i + 1], rad[i], rad[i + 1]) for i in range(len(pts) - 1)]
        for n, (offset, label) in enumerate(layers):
            offset = offset if n == 0 or offset <= 0 else max(offset, 0.6 * self.min_step)
            if n > 0 and offset >= 0.95 * float(rad.min()) and offset > 0:
                continue  # too thin to hold this core at this resolution
            for box, D in segs:
                if box is not None:
                    self.fill(label, box, D <= -offset, only if n == 0 else None, keep)


def profile(knots_z: Sequence[float], *columns: Sequence[float]) -> Callable[[np.ndarray], list[np.ndarray]]:
    """Piecewise-linear profile along z: returns f(z) -> [column values interpolated at z]."""
    kz = np.asarray(knots_z, dtype=np.float64)
    order = np.argsort(kz)
    kz = kz[order]
    cols = [np.asarray(c, dtype=np.float64)[order] for c in columns]

    def f(z: np.ndarray) -> list[np.ndarray]:
        return [np.interp(z, kz, c) for c in cols]

    return f


# ---------------------------------------------------------------------------------------------- random fields
def _spline_matrix(n: int, step: float, corr: float) -> np.ndarray:
    """(n, c) cubic B-spline interpolation weights from a coarse grid of spacing `corr` to n points `step` apart.

    Rows are scaled to unit norm so that interpolated white noise keeps unit variance everywhere.
    """
    u = np.arange(n) * (step / corr) + 1.0
    c = int(np.ceil(u[-1])) + 3 if n else 4
    i0 = np.floor(u).astype(int)
    f = u - i0
    w = np.stack([(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6], 1)
    m = np.zeros((n, c))
    for k in range(4):
        m[np.arange(n), i0 - 1 + k] = w[:, k]
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return m.astype(np.float32)


def smooth_field(
    shape: tuple[int, int, int], spacing_zyx: Vec, corr_mm: float | Vec, rng: np.random.Generator
) -> np.ndarray:
    """A smooth Gaussian random field (float32, zero mean, unit variance) with correlation length ~corr_mm.

    Coarse white noise is interpolated with separable cubic B-splines by three matrix products (BLAS), which
    costs far less than filtering the full volume.
    """
    corr = np.broadcast_to(np.asarray(corr_mm, dtype=np.float64), (3,))
    mats = [_spline_matrix(n, s, c) for n, s, c in zip(shape, spacing_zyx, corr)]
    cz, cy, cx = (m.shape[1] for m in mats)
    a = rng.standard_normal((cz, cy, cx), dtype=np.float32)
    a = a @ mats[2].T  # (cz, cy, nx)
    a = np.matmul(mats[1], a)  # (cz, ny, nx)
    nz = shape[0]
    out = (mats[0] @ a.reshape(cz, -1)).reshape(nz, shape[1], shape[2])
    return out
