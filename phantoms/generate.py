"""One phantom case: anatomy -> labels -> CT and MR -> organiser-style mask -> crop -> scanner orientation.

Every random choice comes from generators seeded by (seed, region, index, stream), so a case never depends
on how many cases are asked for or on the order they are made in, and changing an imperfection rate only
switches that imperfection on or off.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple
from typing import Sequence as Seq

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from modelspec import HU_MAX, HU_MIN
from phantoms.anatomy import CSF_RIM_MM, MAX_SCALP_MM, SCALP_MM, Body, draw_patient
from phantoms.canvas import Canvas, smooth_field
from phantoms.imaging import (
    SEQUENCES,
    add_couch,
    banding,
    blur3,
    metal_streaks,
    mr_lookup,
    render_ct,
    render_mr,
    rician,
    slabs,
    widened,
)
from phantoms.masks import body_mask, crop_box, take
from phantoms.randomise import LEVELS, Randomisation, artefacts, random_contrast
from phantoms.region_specs import RegionSpec, case_id, region_spec
from phantoms.tissues import T
from phantoms.variability import add_textures, deformation, warp

log = logging.getLogger(__name__)

CT_OUTSIDE = -1000  # CT outside the field of view (synthrad.md: CT = -1000, MR = 0, mask = 0)
CT_DEFACED = -1024  # CT inside the defacing region


class PhantomError(ValueError):
    """Bad generator arguments (region, size, spacing, rates)."""


@dataclass(frozen=True)
class Rates:
    """Fractions of cases that get each imperfection."""

    misalign: float = 0.2  # small rigid MR-CT misregistration
    metal: float = 0.15  # dental fillings (HN, brain), hip implant or spinal fixation (AB, pelvis), sternal wires (TH)
    arms: float = 0.25  # arms in the field of view (TH, AB)
    couch: float = 0.3  # CT couch top visible behind the patient
    banding: float = 0.4  # bSSFP banding (low-field cases only)

    def check(self) -> None:
        for name, value in self.__dict__.items():
            if not 0.0 <= value <= 1.0:
                raise PhantomError(f"{name} rate must be within [0, 1], got {value}")


@dataclass(frozen=True)
class SizePreset:
    """Voxel size multiplier and the organisers' voxel margins, scaled down for tiny test cases."""

    name: str
    spacing_factor: tuple[float, float, float]
    dilate_xy: int
    margin_xy: int
    margin_z: int
    open_iter: int  # radius of the mask's noise-removing opening


SIZES = {
    "full": SizePreset("full", (1.0, 1.0, 1.0), dilate_xy=10, margin_xy=20, margin_z=6, open_iter=2),
    "small": SizePreset("small", (5.0, 5.0, 3.0), dilate_xy=2, margin_xy=4, margin_z=2, open_iter=1),
}

# scanner exports: (name, swap x/y, flip x, flip y, flip z, weight)
ORIENTATIONS = (
    ("identity", False, False, False, False, 0.55),
    ("flip_xy", False, True, True, False, 0.15),
    ("flip_z", False, False, False, True, 0.10),
    ("swap_xy", True, False, False, False, 0.10),
    ("swap_xy_flip_x", True, True, False, False, 0.10),
)


@dataclass
class PhantomCase:
    """A generated case: SimpleITK images (int16) with the same geometry, plus what was drawn to make it."""

    case_id: str
    region: str
    centre: str
    mr: sitk.Image
    ct: sitk.Image
    mask: sitk.Image
    info: dict = field(default_factory=dict)
    labels: np.ndarray | None = None  # tissue labels (phantoms.tissues.T) of the CT, same array order as the images
    fov: np.ndarray | None = None  # bool: inside the MR field of view, same array order as the images
    ct_clean: sitk.Image | None = None  # (clean_ct=True) the CT without its noise: the task's floor (see generate_case)

    @property
    def spec(self) -> RegionSpec:
        return region_spec(self.region)


def _rng(seed: int, region: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence(int(seed), spawn_key=(region_spec(region).seed_key, int(index), stream))
    )


def centre_of(region: str, index: int, seed: int) -> str:
    """The centre (letter) of case `index`, drawn with the release's per-centre weights."""
    spec = region_spec(region)
    letters = sorted(spec.centres)
    w = np.array([spec.centres[c] for c in letters], dtype=float)
    return letters[int(_rng(seed, spec.code, index, 0).choice(len(letters), p=w / w.sum()))]


def case_name(region: str, index: int, seed: int) -> tuple[str, str]:
    """(case ID, centre): numbers count per centre, like the release (1ABA001, 1ABB001, 1ABA002, ...)."""
    spec = region_spec(region)
    centre = centre_of(spec.code, index, seed)
    number = 1 + sum(centre_of(spec.code, j, seed) == centre for j in range(index))
    return case_id(spec, centre, number), centre


# ---------------------------------------------------------------------------------------------- geometry
def _body_extent(body: Body, z0: float, z1: float, arms: bool) -> tuple[float, float, float, float]:
    """Conservative in-plane extent (x0, x1, y0, y1) of the body between z0 < z1 (mm)."""
    p, s = body.p, body.p.hs
    zs = np.linspace(z0, z1, 40)
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    trunk = zs[(zs <= -130 * s) & (zs >= -885 * s)]
    if trunk.size:
        cx, cy, a, ba, bp = body.outline(trunk)
        x0, x1 = float((cx - a).min()), float((cx + a).max())
        y0, y1 = float((cy - ba).min()), float((cy + bp).max())
        if p.breasts > 0 and trunk.max() > -520 * s and trunk.min() < -330 * s:
            y0 -= 45
        if arms and z0 < -320 * s:  # the arms hang below the shoulders
            x0, x1 = x0 - 40 - 2 * (48 + 0.35 * p.fat), x1 + 40 + 2 * (48 + 0.35 * p.fat)
    if z1 > -245 * s:  # head
        x0, x1 = min(x0, -84 * p.hc), max(x1, 84 * p.hc)
        y0, y1 = min(y0, -115 * p.hc), max(y1, 108 * p.hc)
    if z0 < -840 * s:  # thighs
        r = 66 * p.ws + 0.6 * p.fat + 72 * p.ws + p.fat + 5
        x0, x1 = min(x0, -r), max(x1, r)
        y0, y1 = min(y0, 15 - r + 66 * p.ws), max(y1, 15 + r - 66 * p.ws)
    return x0, x1, y0, y1


def _orient(
    arrays: list[np.ndarray], spacing: Seq[float], origin: Seq[float], choice: tuple
) -> tuple[list[np.ndarray], tuple, tuple, tuple]:
    """Re-express canonical (identity-direction) arrays as a scanner would store them: axes swapped/flipped.

    The physical content is unchanged: every voxel keeps its physical position; only the index order, the
    direction matrix, the origin (position of index 0) and the spacing order change.
    """
    _, swap, fx, fy, fz, _ = choice
    d = np.eye(3)
    sp = list(spacing)
    org = np.asarray(origin, dtype=float)
    out = list(arrays)
    if swap:  # index x now runs along physical y and vice versa
        out = [np.ascontiguousarray(a.transpose(0, 2, 1)) for a in out]
        d = d[:, [1, 0, 2]]
        sp = [sp[1], sp[0], sp[2]]
    shape_xyz = out[0].shape[::-1]
    for axis_xyz, flip in ((0, fx), (1, fy), (2, fz)):
        if flip:
            org = org + d[:, axis_xyz] * sp[axis_xyz] * (shape_xyz[axis_xyz] - 1)
            d[:, axis_xyz] *= -1
            arr_axis = 2 - axis_xyz
            out = [np.ascontiguousarray(np.flip(a, axis=arr_axis)) for a in out]
    return out, tuple(sp), tuple(org.tolist()), tuple(d.ravel().tolist())


# ---------------------------------------------------------------------------------------------- metal
def _add_metal(cv: Canvas, body: Body, spec: RegionSpec, region: str, rng: np.random.Generator) -> list[str]:
    """Paint metal appropriate to the region inside the canvas; returns what was placed."""
    s = body.p.hs
    placed = []
    if spec.metal == "dental":
        teeth = [t for t in getattr(body, "teeth", []) if cv.z[0] <= t[2] <= cv.z[-1]]
        if teeth:
            n = int(rng.integers(1, min(4, len(teeth)) + 1))
            for i in rng.choice(len(teeth), n, replace=False):
                x, y, z = teeth[int(i)]
                r = max(float(rng.uniform(2.0, 3.5)), 0.9 * cv.max_step)  # a voxel centre always falls inside
                rz = max(r * 0.8, 0.9 * cv.z_step)
                cv.ellipsoid(T.METAL, (x, y, z + (1.5 if z > -170 * s else -1.5)), (r, r, rz))
                placed.append("dental filling")
    elif spec.metal == "hip" or region == "TH":
        hip_z = -815 * s
        if region == "TH":
            x, y = (float(v) for v in body.spine_xy(-400 * s))
            _, cy, _, ba, _ = (float(v[0]) for v in body.cavity(np.array([-400 * s])))
            for z in np.linspace(-320 * s, -450 * s, int(rng.integers(4, 7))):
                cv.tube(
                    [(-14, cy - ba - 14, z), (0, cy - ba - 1, z), (14, cy - ba - 14, z)],
                    max(1.0, 0.9 * cv.max_step),
                    [(0, T.METAL)],
                )
            placed.append("sternal wires")
        elif cv.z[0] <= hip_z <= cv.z[-1]:
            side = 1 if rng.random() < 0.5 else -1
            hip = np.array([side * 88 * body.p.ws, -5 * body.p.ap, hip_z])
            cv.ellipsoid(T.METAL, hip, (23, 23, 23))
            box, F = cv.superquadric(hip + np.array([side * 3, 4, 6]), (30, 30, 30))
            if box is not None:
                cv.fill(T.METAL, box, (F <= 1) & (F > 0.85) & (box.Z > hip[2] - 5))  # acetabular cup
            neck = hip + np.array([side * 32, 10, -35])
            cv.tube([hip, neck, (side * 100 * body.p.ws, 8, hip_z - 160)], [7, 8, 5], [(0, T.METAL)])
            placed.append("hip implant")
        else:
            levels = [
                lv for lv in body.levels() if lv[0].startswith(("L", "T")) and cv.z[0] < lv[2] and lv[1] < cv.z[-1]
            ]
            if len(levels) >= 2:
                k = int(rng.integers(0, len(levels) - 1))
                heads = {-1: [], 1: []}
                for name, zt, zb in levels[k : k + 2]:
                    zm = (zt + zb) / 2
                    x, y = (float(v) for v in body.spine_xy(zm))
                    for side in (-1, 1):
                        head = (x + side * 22, y + 45, zm)
                        cv.tube([head, (x + side * 8, y - 5, zm)], 3.0, [(0, T.METAL)])  # pedicle screw
                        heads[side].append(head)
                for side in (-1, 1):  # rods joining the screw heads
                    a, b = heads[side][0], heads[side][-1]
                    cv.tube([(a[0], a[1] + 3, a[2] + 10), (b[0], b[1] + 3, b[2] - 10)], 3.0, [(0, T.METAL)])
                placed.append("spinal fixation")
    return placed


def _metal_void(mr: np.ndarray, metal: np.ndarray, spacing_zyx: tuple, radius_mm: float) -> None:
    """Signal void around metal in the MR, larger than the metal, with a bright pile-up rim (in place)."""
    idx = np.nonzero(metal)
    if idx[0].size == 0:
        return
    pad = [int(math.ceil((radius_mm + 4) / sp)) for sp in spacing_zyx]
    sl = tuple(slice(max(int(i.min()) - p, 0), int(i.max()) + p + 1) for i, p in zip(idx, pad))
    sub = metal[sl]
    dist = ndimage.distance_transform_edt(~sub, sampling=spacing_zyx)
    factor = np.where(dist < radius_mm, 0.03, np.where(dist < radius_mm + 3.0, 1.7, 1.0)).astype(np.float32)
    mr[sl] *= factor


def _box_mask(shape: tuple, box: tuple[slice, slice, slice], broadcast: bool = False) -> np.ndarray:
    """Boolean field-of-view mask of an index box; broadcastable (z,1,1)&(1,y,1)&(1,1,x) pieces when asked."""
    parts = []
    for axis, (n, sl) in enumerate(zip(shape, box)):
        v = np.zeros(n, dtype=bool)
        v[sl] = True
        parts.append(v.reshape([-1 if a == axis else 1 for a in range(3)]))
    m = parts[0] & parts[1] & parts[2]
    return m if broadcast else np.broadcast_to(m, shape).copy()


def _outside_box(a: np.ndarray, box: tuple[slice, slice, slice], value: float) -> None:
    """Set everything outside an index box to `value` (in place), by slicing."""
    zs, ys, xs = box
    a[: zs.start] = value
    a[zs.stop :] = value
    a[:, : ys.start] = value
    a[:, ys.stop :] = value
    a[:, :, : xs.start] = value
    a[:, :, xs.stop :] = value


def _misalign(labels: np.ndarray, spacing_zyx: tuple, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Resample labels through a small rigid transform (rotation about z up to 2 degrees, shifts up to 3 mm)."""
    ang = math.radians(rng.uniform(-2, 2))
    shift_mm = np.array([rng.uniform(-2, 2), rng.uniform(-3, 3), rng.uniform(-3, 3)])  # z, y, x
    sz, sy, sx = spacing_zyx
    c = np.array(labels.shape, dtype=float) / 2
    # rotation in the (y, x) plane expressed in voxel units (anisotropic in-plane spacing handled)
    m = np.array([[1, 0, 0], [0, math.cos(ang), -math.sin(ang) * sx / sy], [0, math.sin(ang) * sy / sx, math.cos(ang)]])
    offset = c - m @ c - shift_mm / np.array(spacing_zyx)
    out = ndimage.affine_transform(labels, m, offset=offset, order=0, mode="nearest")
    return out, {"rotation_deg": round(math.degrees(ang), 3), "shift_mm_zyx": [round(float(v), 2) for v in shift_mm]}


def _render_mr_volume(
    labels: np.ndarray,
    *,
    tex: np.ndarray,
    marrow: tuple[float, float],
    seq,
    metal: list,
    with_banding: bool,
    spacing_zyx: tuple,
    blur_w: tuple,
    voxel_mm3: float,
    rng: np.random.Generator,
    level: str = "off",
    randomiser: np.random.Generator | None = None,
) -> tuple[np.ndarray, float]:
    """The MR of a case (float32, scaled) and its scale: sequence signal, metal voids, blur, bias, Rician noise.

    `level` "physics" or "full" draws the sequence from wide ranges ("full": a random contrast per tissue) and
    adds the acquisition's artefacts (phantoms/randomise.py), all from `randomiser`; `rng` gives the same draws
    whatever the level, so the plain MR is the one an "off" case has.
    """
    shape = labels.shape
    if level != "off" and randomiser is None:
        raise ValueError(f"MR randomisation {level!r} needs its own random stream")
    rz = randomiser
    mr_seq, jitter = (seq, 0.08) if level == "off" else (widened(seq, rz), 0.25)
    if level == "full":  # a random contrast per label; the sequence's table is drawn (same draws) but not painted
        mr_lookup(mr_seq, rng, jitter)
        mr = random_contrast(labels, rz)
        sig = np.full(256, float(mr[labels > 0].mean()) if (labels > 0).any() else 1.0, dtype=np.float32)
    else:
        mr, sig = render_mr(labels, tex, marrow, mr_seq, rng, jitter)
    if metal:
        _metal_void(
            mr,
            labels == T.METAL,
            spacing_zyx,
            float(rng.uniform(6, 10)) if "hip implant" in metal else float(rng.uniform(4, 7)),
        )
    mr = blur3(mr, (0.12, min(0.45, blur_w[1] + mr_seq.blur), min(0.45, blur_w[2] + mr_seq.blur)))
    bias = smooth_field(shape, spacing_zyx, 180.0, rng)
    if with_banding:
        mr *= banding(shape, spacing_zyx, rng, bias)
    for sl in slabs(shape[0]):
        mr[sl] *= np.exp(np.float32(mr_seq.bias) * bias[sl])
    del bias
    # the sequence's SNR is for 1 x 1 x 3 mm voxels; signal grows with voxel volume, noise does not
    snr = mr_seq.snr * min(4.0, math.sqrt(voxel_mm3 / 3.0))
    sigma = float((sig[T.MUSCLE] + sig[T.FAT]) / 2 / snr)
    mr = rician(mr, sigma, rng)
    if level != "off":  # the acquisition: contrast curve, resolution, Gibbs ringing, motion ghosts
        acquisition = Randomisation(level, kinds=("gamma", "resolution", "gibbs", "ghost"))
        mr = artefacts(mr, labels > 0, rz, acquisition)
    scale = float(rng.uniform(300, 3000))
    mr *= np.float32(scale)
    return mr, scale


def _draw_imperfections(seed: int, code: str, index: int, rates: Rates, spec, seq) -> tuple[dict, str | None]:
    """Which imperfections a case has, and where its arms are (both images, CT only, MR only).

    One uniform per flag, always drawn from its own stream, so a rate only toggles its own feature.
    """
    rf = _rng(seed, code, index, 3)
    u = {k: float(rf.random()) for k in ("misalign", "metal", "arms", "couch", "banding", "arms_mode")}
    has = {
        "misalign": u["misalign"] < rates.misalign,
        "metal": u["metal"] < rates.metal,
        "arms": spec.arms_possible and u["arms"] < rates.arms,
        "couch": u["couch"] < rates.couch and code != "BRAIN",
        "banding": seq.kind == "bssfp" and u["banding"] < rates.banding,
    }
    arms_mode = None
    if has["arms"]:
        arms_mode = "both" if u["arms_mode"] < 0.6 else ("ct_only" if u["arms_mode"] < 0.85 else "mr_only")
    return has, arms_mode


def _render_cts(
    ct_labels,
    tex,
    marrow,
    y_rel,
    rc,
    noise_hu: float,
    blur_w,
    clean_ct: bool,
    metal: bool,
    couch: bool,
    fov,
    y,
    spacing_xy,
) -> list:
    """The CT (and, with clean_ct, its noise-free twin from the same draws), metal streaks and couch added.

    The stream rc is copied before use so that the clean CT replays the same draws with the noise scaled by zero.
    """
    before = copy.deepcopy(rc.bit_generator.state)
    cts = [render_ct(ct_labels, tex, marrow, y_rel, rc, noise_hu, blur_w)]
    streams = [rc]
    if clean_ct:
        clean_stream = np.random.Generator(type(rc.bit_generator)())
        clean_stream.bit_generator.state = before
        cts.append(render_ct(ct_labels, tex, marrow, y_rel, clean_stream, 0.0, blur_w))
        streams.append(clean_stream)
    for image, stream in zip(cts, streams):
        if metal:
            metal_streaks(image, ct_labels == T.METAL, spacing_xy, stream, strength=float(stream.uniform(0.8, 1.6)))
        if couch:
            add_couch(image, ct_labels, fov, y, stream)
    return cts


def _deface(patient, z: np.ndarray, y: np.ndarray, shape: tuple, cts: list, mr: np.ndarray) -> np.ndarray:
    """Remove nose, lips and chin (in front of a plane just anterior to the eyes, brows to chin) from the images,
    in place, as the release's defacing does; returns the removed region."""
    Z, Y = z[:, None, None], y[None, :, None]
    face = (Y < -81 * patient.hc - 0.08 * (Z + 150 * patient.hs)) & (Z > -210 * patient.hs) & (Z < -92 * patient.hs)
    face = np.broadcast_to(face, shape)
    for image in cts:
        np.copyto(image, np.float32(CT_DEFACED), where=face)
    np.copyto(mr, np.float32(0), where=face)
    return face


class Slab(NamedTuple):
    """Where the scan lies on the patient and the canvas grid around it."""

    x: np.ndarray  # voxel centres (mm) along x, y, z
    y: np.ndarray
    z: np.ndarray
    shape: tuple[int, int, int]  # canvas (z, y, x)
    fov_box: tuple[slice, slice, slice]  # the MR's field of view on the canvas
    fov: np.ndarray  # the same as a broadcastable mask
    orient: tuple  # scanner orientation (one of ORIENTATIONS)
    table: np.ndarray  # table offset (mm) added to the origin
    z_top: float
    z_bot: float
    body_extent: tuple[float, float, float, float]  # the body's x0, x1, y0, y1 (mm)


def _slab(seed: int, code: str, index: int, spec, patient, anat_seed: int, preset, spacing_xyz: tuple) -> Slab:
    """Where the scan lies: the slab along z, the MR's in-plane field of view (it can be narrower than the patient),
    the canvas grid around them, the scanner orientation and table offset; all from stream 2.
    """
    sx, sy, sz = spacing_xyz
    rg = _rng(seed, code, index, 2)
    top_range = spec.top
    if spec.low_top is not None and rg.random() < spec.low_rate:
        top_range = spec.low_top
    z_top = float(rg.uniform(*top_range)) * patient.hs
    length = float(rg.uniform(*spec.length))
    n_fov = max(int(round(length / sz)), 3)
    z_bot = z_top - n_fov * sz
    body_probe = Body(patient, anat_seed)
    bx0, bx1, by0, by1 = _body_extent(body_probe, z_bot, z_top, patient.arms_down)
    half_w = float(rg.uniform(215, 260))  # the MR's in-plane field of view can be narrower than the patient
    half_h = float(rg.uniform(170, 210))
    fx0 = max(bx0 - rg.uniform(5, 50), -half_w)
    fx1 = min(bx1 + rg.uniform(5, 50), half_w)
    ymid = (by0 + by1) / 2
    fy0 = max(by0 - rg.uniform(5, 50), ymid - half_h)
    fy1 = min(by1 + rg.uniform(5, 50), ymid + half_h)
    orient = ORIENTATIONS[int(rg.choice(len(ORIENTATIONS), p=[o[-1] for o in ORIENTATIONS]))]
    table = np.array([rg.uniform(-40, 40), rg.uniform(-120, 60), rg.uniform(-300, 300)])

    pad_xy = preset.dilate_xy + preset.margin_xy + 2
    x = np.arange(max(bx0, fx0) - pad_xy * sx, min(bx1, fx1) + pad_xy * sx + sx, sx)
    y = np.arange(max(by0, fy0) - pad_xy * sy, min(by1, fy1) + 50 + pad_xy * sy + sy, sy)
    mz = preset.margin_z + 1
    z = z_bot + (np.arange(n_fov + 2 * mz) + 0.5 - mz) * sz
    shape = (z.size, y.size, x.size)
    fov_box = tuple(
        slice(int(np.searchsorted(c, lo)), int(np.searchsorted(c, hi, side="right")))
        for c, lo, hi in ((z, z_bot, z_top), (y, fy0, fy1), (x, fx0, fx1))
    )
    fov = _box_mask(shape, fov_box, broadcast=True)
    return Slab(x, y, z, shape, fov_box, fov, orient, table, z_top, z_bot, (bx0, bx1, by0, by1))


class Anatomy(NamedTuple):
    """The painted labels of a case (CT and MR may differ: arms, misregistration) and what went into them."""

    tex: np.ndarray  # the smooth texture field every tissue's intensity is modulated by
    ct_labels: np.ndarray
    mr_labels: np.ndarray
    metal: list[str]  # metal implants inside the slab
    textures: dict | None  # the variability's texture draws (None without variability)
    misalignment: dict | None  # the MR's rigid misregistration (None without)


def _anatomy(
    seed: int, code: str, index: int, slab: Slab, spacing_zyx: tuple, patient, anat_seed: int, has: dict,
    arms_mode: str | None, spec: RegionSpec, variability: bool, csf_rim_mm: tuple[float, float],
    scalp_mm: tuple[float, float],
) -> Anatomy:  # fmt: skip
    """Paint the labels on the canvas (streams 4, 6, 9, 10, and 6 again for the misregistration): body, arms,
    metal, the optional elastic deformation and textures, then the CT's and the MR's own label maps."""
    x, y, z, shape = slab.x, slab.y, slab.z, slab.shape
    sz, sy, sx = spacing_zyx
    rt = _rng(seed, code, index, 4)
    corr = max(7.0, 1.5 * max(sx, sy))
    tex = smooth_field(shape, spacing_zyx, (max(corr, 1.2 * sz), corr, corr), rt)
    cv = Canvas(x, y, z, tex)
    body = Body(patient, anat_seed)
    body.arms_in_body = not (has["arms"] and arms_mode != "both")
    body.vary_head = variability
    body.csf_rim_mm = csf_rim_mm
    body.scalp_mm = scalp_mm
    body.paint(cv)
    labels = cv.labels
    arms_labels = None
    if has["arms"] and arms_mode != "both":
        arm_cv = Canvas(x, y, z, tex)
        body.paint_arms(arm_cv)
        arms_labels = arm_cv.labels
    rm = _rng(seed, code, index, 6)
    metal = _add_metal(cv, body, spec, code, rm) if has["metal"] else []
    if metal and not (cv.labels == T.METAL).any():
        metal = []  # nothing of it inside the slab
    textures = None
    if variability:
        rv = _rng(seed, code, index, 9)
        moved = deformation(shape, spacing_zyx, rv)
        labels = warp(labels, moved)
        if arms_labels is not None:
            arms_labels = warp(arms_labels, moved)
        del moved
        textures = add_textures(labels, spacing_zyx, rv)
        if arms_labels is not None:
            add_textures(arms_labels, spacing_zyx, _rng(seed, code, index, 10))
        if metal and not (labels == T.METAL).any():
            metal = []
    ct_labels, mr_labels = labels, labels
    if arms_labels is not None:
        with_arms = np.where(arms_labels > 0, arms_labels, labels)
        if arms_mode == "ct_only":
            ct_labels = with_arms
        else:
            mr_labels = with_arms
    mis = None
    if has["misalign"]:
        mr_labels, mis = _misalign(mr_labels, spacing_zyx, rm)
    return Anatomy(tex, ct_labels, mr_labels, metal, textures, mis)


class Cropped(NamedTuple):
    """The stored images of a case, cropped to the body mask's box (before the scanner's axis order)."""

    box: tuple[slice, slice, slice]
    ct: np.ndarray  # int16
    clean: np.ndarray  # int16 (a 1-voxel placeholder without clean_ct)
    mask: np.ndarray  # int16
    labels: np.ndarray
    fov: np.ndarray
    mr: np.ndarray  # int16
    mr_scale: float
    mr_seconds: float  # time of the randomised MR re-render (counted as MR time, not crop time)


def _mask_and_crop(
    cid: str, seed: int, code: str, index: int, spec: RegionSpec, patient, slab: Slab, preset, cts: list,
    mr: np.ndarray, scale: float, mr_labels: np.ndarray, ct_labels: np.ndarray, render: dict,
    mr_randomisation: str, clean_ct: bool, timings: dict,
) -> Cropped:  # fmt: skip
    """Deface, cut to the field of view, draw the organisers' body mask on the MR, crop every image to its box;
    with MR randomisation, re-render the MR of the crop (stream 8) and add its time to timings["mr_s"]."""
    ct, tex = cts[0], render["tex"]
    x, y, z, shape, fov_box = slab[:5]
    mr_seconds = 0.0
    face = _deface(patient, z, y, shape, cts, mr) if spec.defaced else None
    for image in cts:
        np.clip(image, HU_MIN, HU_MAX, out=image)
        _outside_box(image, fov_box, CT_OUTSIDE)
    np.minimum(mr, 32767, out=mr)
    _outside_box(mr, fov_box, 0)
    fov_full = np.zeros(shape, dtype=bool)
    fov_full[fov_box] = True
    mask = body_mask(mr, fov_full, preset.dilate_xy, preset.open_iter)  # the organisers draw it on the MR
    box = crop_box(mask, preset.margin_xy, preset.margin_z)
    if box is None:
        raise PhantomError(f"{cid}: empty body mask (no anatomy in the field of view)")
    ct_a = np.rint(take(ct, box, CT_OUTSIDE)).astype(np.int16)
    clean_a = np.rint(take(cts[1], box, CT_OUTSIDE)).astype(np.int16) if clean_ct else np.zeros((1, 1, 1), np.int16)
    mask_a = take(mask, box, False).astype(np.int16)
    labels_a = take(ct_labels, box, 0)
    fov_a = take(fov_full, box, False)
    if mr_randomisation != "off":
        # The randomised MR replaces the plain one inside the stored crop only: the mask (drawn on the plain MR)
        # and so the crop and the CT stay exactly those of the same case at "off", and the work is done on the
        # crop, not on the whole canvas. Stream 7 gives the plain draws, stream 8 the randomisation's.
        t1 = time.perf_counter()
        render["tex"] = take(tex, box, 0)
        mr, scale = _render_mr_volume(
            take(mr_labels, box, 0),
            rng=_rng(seed, code, index, 7),
            level=mr_randomisation,
            randomiser=_rng(seed, code, index, 8),
            **render,
        )
        if face is not None:
            mr[take(face, box, False)] = 0
        mr[~fov_a] = 0
        mr_seconds = time.perf_counter() - t1
        timings["mr_s"] += mr_seconds
    mr_box = take(mr, box, 0) if mr_randomisation == "off" else mr
    mr_a = np.rint(np.clip(mr_box, 0, np.iinfo(np.int16).max)).astype(np.int16)  # never wraps
    return Cropped(box, ct_a, clean_a, mask_a, labels_a, fov_a, mr_a, scale, mr_seconds)


def _case_info(
    cid: str, code: str, centre: str, index: int, seed: int, size: str, seq, shape_zyx: tuple, spacing_xyz, orient,
    slab: Slab, patient, anatomy: Anatomy, has: dict, arms_mode, mr_randomisation: str, noise_hu: float,
    scale: float, timings: dict,
) -> dict:  # fmt: skip
    """The case's record (info.json): who, what was drawn, which imperfections, how long each stage took."""
    return {
        "case_id": cid,
        "region": code,
        "centre": centre,
        "index": index,
        "seed": seed,
        "size": size,
        "sequence": seq.description,
        "sequence_key": seq.key,
        "shape_zyx": list(shape_zyx),
        "spacing_xyz": list(spacing_xyz),
        "orientation": orient[0],
        "slab_mm_below_vertex": [round(-slab.z_top, 1), round(-slab.z_bot, 1)],
        "patient": {
            "sex": "M" if patient.male else "F",
            "height_scale": round(patient.hs, 3),
            "girth_scale": round(patient.ws, 3),
            "fat_mm": round(patient.fat, 1),
        },
        "imperfections": {
            "misalignment": anatomy.misalignment,
            "metal": anatomy.metal or None,
            "arms": arms_mode,
            "couch": has["couch"],
            "banding": has["banding"],
        },
        "mr_randomisation": mr_randomisation,
        "variability": anatomy.textures,
        "ct_noise_hu": round(noise_hu, 1),
        "mr_scale": round(scale, 1),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def _to_images(arrays, spacing, origin, direction) -> list[sitk.Image]:
    """SimpleITK images of the oriented arrays, all on the same physical grid."""
    images = []
    for array in arrays:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction)
        images.append(image)
    return images


def check_case_arguments(
    size: str, spacing: Seq[float], index: int, mr_randomisation: str
) -> tuple[SizePreset, tuple[float, float, float]]:
    """The argument checks every phantom source shares (analytic and template heads); returns the size preset and the
    voxel size (x, y, z mm) after its multiplier."""
    if size not in SIZES:
        raise PhantomError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise PhantomError(f"spacing must be three positive numbers (x, y, z mm), got {tuple(spacing)}")
    if index < 0:
        raise PhantomError(f"case index must be >= 0, got {index}")
    if mr_randomisation not in LEVELS:
        raise PhantomError(f"MR randomisation must be one of {', '.join(LEVELS)}, got {mr_randomisation!r}")
    preset = SIZES[size]
    sx, sy, sz = (float(spacing[i]) * preset.spacing_factor[i] for i in range(3))
    return preset, (sx, sy, sz)


# ---------------------------------------------------------------------------------------------- main
def generate_case(
    region: str,
    index: int,
    seed: int = 0,
    spacing: Seq[float] = (1.0, 1.0, 3.0),
    size: str = "full",
    rates: Rates | None = None,
    clean_ct: bool = False,
    mr_randomisation: str = "off",
    variability: bool = False,
    csf_rim_mm: Seq[float] = CSF_RIM_MM,
    scalp_mm: Seq[float] = SCALP_MM,
) -> PhantomCase:
    """Generate case number `index` (0-based) of a region; identical arguments give identical images.

    clean_ct also renders the CT without its noise, from the same labels (so without the MR-CT misregistration,
    which moves only the MR) and with the same random draws otherwise (texture, metal streaks, couch): the best
    CT any model could predict, whose error against the stored CT is the task's floor.

    spacing is (x, y, z) in mm before the size preset's multiplier; size "small" makes tiny cases (tests, CI).

    mr_randomisation ("off", "physics", "full"; phantoms/randomise.py) changes the MR only, variability (an
    elastic deformation of the labels and textures inside tissues; phantoms/variability.py) both images; each
    draws from its own random stream, so with both off a case is what it always was. csf_rim_mm (with
    variability) bounds the CSF rim under the skull: the same draws, mapped onto that range; scalp_mm (with
    variability) bounds the scalp's thickness over the cranium (skin to skull; default one fixed 5.5 mm, real
    scalps run from about 4 mm at the vertex to over 10 mm where the temporal muscles lie under it).
    """
    t_start = time.perf_counter()
    spec = region_spec(region)
    code = spec.code
    preset, (sx, sy, sz) = check_case_arguments(size, spacing, index, mr_randomisation)
    rates = rates or Rates()
    rates.check()
    csf_rim = (float(csf_rim_mm[0]), float(csf_rim_mm[1])) if len(csf_rim_mm) == 2 else (-1.0, -1.0)
    if not 0.0 < csf_rim[0] <= csf_rim[1]:
        raise PhantomError(f"csf_rim_mm must be two numbers 0 < low <= high (mm), got {tuple(csf_rim_mm)}")
    scalp = (float(scalp_mm[0]), float(scalp_mm[1])) if len(scalp_mm) == 2 else (-1.0, -1.0)
    if not 2.0 <= scalp[0] <= scalp[1] <= MAX_SCALP_MM:
        raise PhantomError(
            f"scalp_mm must be two numbers 2 <= low <= high <= {MAX_SCALP_MM:g} (mm), got {tuple(scalp_mm)}"
        )
    cid, centre = case_name(code, index, seed)
    seq = SEQUENCES[spec.sequences[centre]]

    has, arms_mode = _draw_imperfections(seed, code, index, rates, spec, seq)

    ra = _rng(seed, code, index, 1)
    patient = draw_patient(ra, code)
    if has["arms"]:
        patient.arms_down = True
    anat_seed = int(ra.integers(2**31))

    # --- slab and field of view
    slab = _slab(seed, code, index, spec, patient, anat_seed, preset, (sx, sy, sz))
    x, y, z, shape, fov_box, fov, orient, table = slab[:8]
    bx0, bx1, by0, by1 = slab.body_extent
    spacing_zyx = (sz, sy, sx)
    timings = {}

    # --- anatomy
    t0 = time.perf_counter()
    anatomy = _anatomy(
        seed, code, index, slab, spacing_zyx, patient, anat_seed, has, arms_mode, spec, variability, csf_rim, scalp
    )
    tex, ct_labels, mr_labels, metal = anatomy.tex, anatomy.ct_labels, anatomy.mr_labels, anatomy.metal
    timings["anatomy_s"] = time.perf_counter() - t0

    # --- CT
    t0 = time.perf_counter()
    rc = _rng(seed, code, index, 5)
    by_lo, by_hi = by0, by1
    y_rel = np.clip((y - by_lo) / max(by_hi - by_lo, 1.0), 0, 1).astype(np.float32)[None, :, None]
    marrow = (0.25 + 0.45 * patient.age, 0.2)
    noise_hu = float(rc.uniform(8, 18)) * (1 + 0.003 * max(bx1 - bx0 - 300, 0))  # wider patient, more noise
    blur_w = (0.12, 0.2 * min(1.0, 1.0 / sy), 0.2 * min(1.0, 1.0 / sx))
    cts = _render_cts(
        ct_labels, tex, marrow, y_rel, rc, noise_hu, blur_w, clean_ct, bool(metal), has["couch"], fov, y, (sx, sy)
    )
    timings["ct_s"] = time.perf_counter() - t0

    # --- MR
    t0 = time.perf_counter()
    render = dict(
        tex=tex,
        marrow=marrow,
        seq=seq,
        metal=metal,
        with_banding=has["banding"],
        spacing_zyx=spacing_zyx,
        blur_w=blur_w,
        voxel_mm3=sx * sy * sz,
    )
    mr, scale = _render_mr_volume(mr_labels, rng=_rng(seed, code, index, 7), **render)
    timings["mr_s"] = time.perf_counter() - t0

    # --- defacing, field of view, mask, crop
    t0 = time.perf_counter()
    crop = _mask_and_crop(
        cid, seed, code, index, spec, patient, slab, preset, cts, mr, scale, mr_labels, ct_labels, render,
        mr_randomisation, clean_ct, timings,
    )  # fmt: skip
    box, ct_a, clean_a, mask_a, labels_a, fov_a, mr_a, scale = crop[:8]
    timings["mask_crop_s"] = time.perf_counter() - t0 - crop.mr_seconds

    # --- geometry: physical position of the crop's first voxel, then the scanner's axis order
    origin = np.array([x[0] + box[2].start * sx, y[0] + box[1].start * sy, z[0] + box[0].start * sz]) + table
    (ct_a, mr_a, mask_a, labels_a, fov_a), sp, org, direction = _orient(
        [ct_a, mr_a, mask_a, labels_a, fov_a], (sx, sy, sz), origin, orient
    )
    if clean_ct:
        clean_a = _orient([clean_a], (sx, sy, sz), origin, orient)[0][0]
    images = _to_images((mr_a, ct_a, mask_a) + ((clean_a,) if clean_ct else ()), sp, org, direction)
    timings["total_s"] = time.perf_counter() - t_start
    info = _case_info(
        cid, code, centre, index, seed, size, seq, ct_a.shape, sp, orient, slab, patient, anatomy, has, arms_mode,
        mr_randomisation, noise_hu, scale, timings,
    )  # fmt: skip
    if variability:
        info["csf_rim_mm"] = list(csf_rim)
        info["scalp_mm"] = list(scalp)
    log.debug("%s: %s", cid, info)
    return PhantomCase(
        cid,
        code,
        centre,
        images[0],
        images[1],
        images[2],
        info,
        labels=labels_a,
        fov=fov_a,
        ct_clean=images[3] if clean_ct else None,
    )
