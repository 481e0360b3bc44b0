"""Template-derived heads: real human head anatomy from SPM's tissue probability map, made into many heads.

The analytic heads (phantoms/anatomy.py) have a smooth ellipsoidal brain, a smooth CSF rim and a smooth shell
skull; a network that learned them finds almost no skull on a real head. Here the anatomy comes from real heads
instead (the seg2med / SynthSeg idea: label maps of real anatomy, random contrasts, a physical CT):

1. SPM's whole-head tissue probability map (6 classes: grey matter, white matter, CSF, bone, soft tissue,
   air/background; 1.5 mm, MNI space, vertex to upper neck) and the Neuromorphometrics structure labels
   (ventricles, deep grey nuclei, brainstem), read from the installed PyPI wheel `spm-runtime-r2025b` (never
   vendored: GPL-2, and the labels CC BY-NC);
2. per case, a random affine (head size, per-axis scale, rotation) and a large smooth elastic deformation map
   the case's grid into template space, where the probabilities are sampled;
3. labels are *drawn*, not the fixed argmax: every class's log-probability gets its own smooth random field
   (finer for grey/white/CSF, so the cortex folds at the width of real gyri and sulci rather than the average
   template's blur), and a per-case shift of the CSF class widens or narrows the CSF spaces;
4. refined into what the renderer needs: a closed cranial vault of random, smoothly varying thickness around the
   intracranial cavity with outer and inner tables and diploe, skull base, face and spine from the drawn bone
   class (cortical rim, marrow core), skin and scalp fat, intermuscular fat, air inside the head (sinuses,
   mastoids, airway) where the air class sits inside the body, ventricles of random size, deep grey nuclei and the
   brainstem from the structure labels;
5. CT and MR rendered with the analytic phantoms' physics (phantoms/generate.py): same tissue tables, noise,
   partial volume, sequences and MR randomisation; the organisers' body mask; the SynthRAD HN grid.

Every random choice comes from generators seeded by (seed, index, stream): the same arguments give the same bytes.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence as Seq

import numpy as np
from scipy import ndimage

from engine.regions import REGIONS as TABLE
from phantoms.canvas import smooth_field
from phantoms.generate import (
    CT_OUTSIDE,
    PhantomCase,
    PhantomError,
    _render_cts,
    _render_mr_volume,
    _to_images,
    check_case_arguments,
)
from phantoms.imaging import SEQUENCES, blur3
from phantoms.masks import body_mask, crop_box, fill_holes_xy, largest_component, take
from phantoms.region_specs import region_spec
from phantoms.tissues import T

log = logging.getLogger(__name__)

SPM_WHEEL = "spm-runtime-r2025b"  # pip name; the import name is spm_runtime
SPM_MODULE = "spm_runtime"
CTF_PATH = ("_spm", "_spm.ctf")  # an ordinary zip inside the package
TPM_MEMBER = "fsroot/_spm/cleaned/spm/tpm/TPM.nii"
LABELS_MEMBER = "fsroot/_spm/cleaned/spm/tpm/labels_Neuromorphometrics.nii"
LABEL_NAMES_MEMBER = "fsroot/_spm/cleaned/spm/tpm/labels_Neuromorphometrics.xml"
TEMPLATE_CENTRE = "T"  # case ids 1HNT000, 1BT000: never collide with the analytic centres' ids
#: Regions with template heads, and each one's random stream (engine/regions.json, phantom.template_head_seed_key)
TEMPLATE_SEED_KEYS = {
    code: r.phantom["template_head_seed_key"] for code, r in TABLE.items() if "template_head_seed_key" in r.phantom
}
REGIONS = tuple(TEMPLATE_SEED_KEYS)
GM, WM, CSF, BONE, SOFT, AIR = range(6)  # the TPM's class order
BG_MARGIN_MM = 36.0  # air around the head in-plane (the organisers' 10-voxel dilation + 20-voxel crop margin)

# structure labels (names in the atlas' XML) and what they become
VENTRICLE_WORDS = ("Lateral Ventricle", "Inf Lat Vent")
MIDLINE_VENTRICLE_WORDS = ("3rd Ventricle", "4th Ventricle")
DEEP_GREY_WORDS = ("Caudate", "Putamen", "Pallidum", "Thalamus", "Accumbens", "Amygdala", "Hippocampus", "Ventral DC")
BRAINSTEM_WORDS = ("Brain Stem",)


class TemplateUnavailable(PhantomError):
    """The tissue probability map is not installed (pip install --no-deps spm-runtime-r2025b nibabel)."""


@dataclass(frozen=True)
class Atlas:
    """The template in array order (z, y, x) with z up, y anterior-to-posterior, x as MNI x (mm on 1.5 mm voxels)."""

    tpm: np.ndarray  # (6, nz, ny, nx) float32 probabilities
    labels: np.ndarray  # (nz, ny, nx) uint16 structure labels
    names: dict[int, str]
    spacing: float  # mm


@dataclass(frozen=True)
class HeadDraws:
    """What one case drew (recorded in its info.json)."""

    head_scale: float
    axis_scale: tuple[float, float, float]  # z, y, x
    rotation_deg: tuple[float, float, float]  # about x (pitch), y (roll), z (yaw)
    elastic_mm: float
    skull_mm: float  # mean vault thickness
    csf_shift: float  # log-odds added to the CSF class (wider CSF spaces when > 0)
    ventricle_mm: float  # ventricles grown (> 0) or shrunk (< 0)
    folding: float  # amplitude of the fine random fields that move the grey / white and grey / CSF borders
    diploe_hu: float  # the vault's diploe is denser than the body's cancellous bone: HU added to its marrow
    scalp_fat_mm: float
    bottom_cut_mm: float


def _spm_ctf() -> Path:
    spec = importlib.util.find_spec(SPM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise TemplateUnavailable(
            f"template heads need SPM's tissue probability map: pip install --no-deps {SPM_WHEEL} nibabel"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*CTF_PATH)
    if not path.is_file():
        raise TemplateUnavailable(f"{SPM_WHEEL} is installed but {path} is missing")
    return path


def template_source() -> str:
    """Which package and version the anatomy comes from (for provenance)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{SPM_WHEEL}=={version(SPM_WHEEL)}"
    except PackageNotFoundError:
        return SPM_WHEEL


def _to_zyx(volume: np.ndarray) -> np.ndarray:
    """NIfTI (i, j, k[, c]) with x = 90 - 1.5 i, y = -126 + 1.5 j, z = -72 + 1.5 k -> (z, y', x) arrays with y' =
    -y (posterior positive, as the phantoms' canvas has it) and x as stored."""
    a = np.moveaxis(volume, (0, 1, 2), (2, 1, 0))  # (k, j, i[, c])
    return a[:, ::-1]  # y' = -y: anterior first


@functools.lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """The tissue probability map and structure labels from the installed wheel (read once per process)."""
    try:
        import nibabel as nib
    except ImportError as err:
        raise TemplateUnavailable("template heads need nibabel: pip install nibabel") from err
    with zipfile.ZipFile(_spm_ctf()) as ctf:
        tpm_image = nib.Nifti1Image.from_bytes(ctf.read(TPM_MEMBER))
        label_image = nib.Nifti1Image.from_bytes(ctf.read(LABELS_MEMBER))
        xml = ctf.read(LABEL_NAMES_MEMBER).decode("latin-1")
    affine = tpm_image.affine
    if not np.allclose(np.abs(np.diag(affine)[:3]), 1.5) or not np.allclose(label_image.affine, affine):
        raise TemplateUnavailable(f"unexpected grid in {SPM_WHEEL}: {affine.tolist()}")
    tpm = np.asarray(tpm_image.dataobj, dtype=np.float32)  # (i, j, k, 6)
    tpm = np.ascontiguousarray(np.moveaxis(_to_zyx(tpm), -1, 0))
    labels = np.ascontiguousarray(_to_zyx(np.asarray(label_image.dataobj).astype(np.uint16)))
    names = {int(i): n.strip() for i, n in re.findall(r"<index>(\d+)</index>\s*<name>([^<]+)</name>", xml)}
    return Atlas(tpm, labels, names, 1.5)


def _label_ids(atlas: Atlas, words: Seq[str]) -> list[int]:
    return [i for i, name in atlas.names.items() if any(w in name for w in words)]


def _rng(seed: int, region: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, 7919, TEMPLATE_SEED_KEYS[region], index, stream])


def _rotation(pitch: float, roll: float, yaw: float) -> np.ndarray:
    """Rotation (z, y, x order) about x (pitch, nodding), y (roll) and z (yaw), angles in radians."""
    cx, sx, cy, sy, cz, sz = (
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
        math.cos(yaw),
        math.sin(yaw),
    )
    about_x = np.array([[cx, sx, 0], [-sx, cx, 0], [0, 0, 1.0]])  # mixes z and y
    about_y = np.array([[cy, 0, sy], [0, 1.0, 0], [-sy, 0, cy]])  # mixes z and x
    about_z = np.array([[1.0, 0, 0], [0, cz, -sz], [0, sz, cz]])  # mixes y and x
    return about_z @ about_y @ about_x


def draw_head(rng: np.random.Generator) -> HeadDraws:
    """The per-case draws (stream 1)."""
    return HeadDraws(
        head_scale=float(rng.uniform(0.88, 1.1)),
        axis_scale=tuple(float(v) for v in rng.uniform(0.94, 1.06, 3)),
        rotation_deg=(float(rng.uniform(-12, 12)), float(rng.uniform(-5, 5)), float(rng.uniform(-8, 8))),
        elastic_mm=float(rng.uniform(2.0, 6.0)),
        skull_mm=float(rng.uniform(4.5, 8.0)),
        csf_shift=float(rng.uniform(-0.8, 0.8)),
        ventricle_mm=float(rng.uniform(-1.0, 4.0)),
        folding=float(rng.uniform(0.5, 0.9)),
        scalp_fat_mm=float(rng.uniform(1.0, 4.5)),
        diploe_hu=float(rng.uniform(250.0, 550.0)),
        bottom_cut_mm=float(rng.uniform(0.0, 30.0)),
    )


def _case_grid(atlas: Atlas, draws: HeadDraws, spacing_zyx: tuple[float, float, float]):
    """Voxel centres (z, y, x mm) of the case grid: the deformed head's box (the air margin is padded on later)."""
    nz, ny, nx = atlas.labels.shape
    extent = np.array([nz, ny, nx]) * atlas.spacing * draws.head_scale * np.array(draws.axis_scale)
    half = extent / 2 * np.array([1.04, 1.1, 1.1])  # room for the rotation
    axes = []
    for h, step in zip(half, spacing_zyx):
        n = max(3, int(round(2 * h / step)))
        axes.append((np.arange(n) - (n - 1) / 2) * step)
    z, y, x = axes
    cut = int(draws.bottom_cut_mm / spacing_zyx[0])
    return z[cut:], y, x


def _pad_xy(labels: np.ndarray, y: np.ndarray, x: np.ndarray, margin_mm: float):
    """Air around the head in-plane, so the organisers' mask dilation and crop margin fit."""
    py, px = (int(math.ceil(margin_mm / float(c[1] - c[0]))) for c in (y, x))
    labels = np.pad(labels, ((0, 0), (py, py), (px, px)))
    y = np.concatenate([y[0] - (np.arange(py, 0, -1)) * (y[1] - y[0]), y, y[-1] + np.arange(1, py + 1) * (y[1] - y[0])])
    x = np.concatenate([x[0] - (np.arange(px, 0, -1)) * (x[1] - x[0]), x, x[-1] + np.arange(1, px + 1) * (x[1] - x[0])])
    return labels, y, x


def _box_of(mask: np.ndarray, margin_vox: Seq[int]) -> tuple[slice, slice, slice]:
    """The bounding box of a mask grown by a margin (clipped to the volume); the whole volume when empty."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    box = []
    for axis, (n, m) in enumerate(zip(mask.shape, margin_vox)):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, int(hit[0]) - m), min(n, int(hit[-1]) + m + 1)))
    return tuple(box)


def _template_coordinates(
    atlas: Atlas, draws: HeadDraws, z: np.ndarray, y: np.ndarray, x: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(3, nz, ny, nx) float32 template voxel indices of every case voxel: inverse affine plus elastic field."""
    shape = (z.size, y.size, x.size)
    spacing_zyx = (float(z[1] - z[0]) if z.size > 1 else 3.0, float(y[1] - y[0]), float(x[1] - x[0]))
    scale = draws.head_scale * np.array(draws.axis_scale)
    rot = _rotation(*(math.radians(a) for a in draws.rotation_deg))
    inverse = np.linalg.inv(rot @ np.diag(scale))  # case mm (centred) -> template mm (centred)
    nz, ny, nx = atlas.labels.shape
    centre_index = (np.array([nz, ny, nx]) - 1) / 2
    coords = np.empty((3,) + shape, dtype=np.float32)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij", sparse=True)
    for axis in range(3):
        a = inverse[axis]
        coords[axis] = (a[0] * zz + a[1] * yy + a[2] * xx) / atlas.spacing + centre_index[axis]
    for axis in range(3):
        field = smooth_field(shape, spacing_zyx, (40.0, 40.0, 40.0), rng)
        field *= np.float32(draws.elastic_mm / atlas.spacing)
        coords[axis] += field
    return coords


def _sample(volume: np.ndarray, coords: np.ndarray, order: int, fill: float) -> np.ndarray:
    return ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=fill, prefilter=False)


def _distance(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) from every voxel outside `mask` to the mask (0 inside)."""
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~mask, sampling=spacing_zyx).astype(np.float32)


def draw_labels(
    atlas: Atlas, draws: HeadDraws, z: np.ndarray, y: np.ndarray, x: np.ndarray, seed_streams: Seq[np.random.Generator]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The case's tissue labels (phantoms.tissues.T, uint8, (nz, ny, nx)) from the template (streams 2-4), padded
    with air in-plane; returns (labels, the vault's diploe, y, x) with the padded grid's voxel centres."""
    r_warp, r_draw, r_refine = seed_streams
    y_in, x_in = y, x
    shape = (z.size, y.size, x.size)
    spacing_zyx = (float(z[1] - z[0]), float(y[1] - y[0]), float(x[1] - x[0]))
    coords = _template_coordinates(atlas, draws, z, y, x, r_warp)

    # --- drawn classes: log-probabilities plus smooth random fields; finer inside the brain (cortical folding)
    logits = np.empty((6,) + shape, dtype=np.float32)
    for k in range(6):
        p = _sample(atlas.tpm[k], coords, 1, 1.0 if k == AIR else 0.0)
        np.maximum(p, 1e-4, out=p)
        logits[k] = np.log(p)
        logits[k] += smooth_field(shape, spacing_zyx, 8.0, r_draw) * np.float32(0.6)
    head = logits[AIR] < np.float32(math.log(0.5))  # where the template is not background
    brain_box = _box_of(np.logaddexp(logits[GM], logits[WM]) > np.float32(math.log(0.02)), (1, 3, 3))
    sub = tuple(b.stop - b.start for b in brain_box)
    fine = (max(3.5, spacing_zyx[0]), 3.5, 3.5)  # gyri and sulci: a few mm wide
    grey_csf = smooth_field(sub, spacing_zyx, fine, r_draw) * np.float32(draws.folding)
    white_grey = smooth_field(sub, spacing_zyx, fine, r_draw) * np.float32(draws.folding)
    logits[(GM,) + brain_box] += grey_csf
    logits[(CSF,) + brain_box] -= grey_csf
    logits[(WM,) + brain_box] += white_grey
    logits[(GM,) + brain_box] -= white_grey
    del grey_csf, white_grey
    logits[CSF] += np.float32(draws.csf_shift)
    cls = np.argmax(logits, axis=0).astype(np.uint8)
    p_bone = logits[BONE] > np.float32(math.log(0.02))  # where people have bone at all
    del logits
    structures = _sample(atlas.labels.astype(np.float32), coords, 0, 0.0).astype(np.uint16)
    del coords

    # --- body: everything not background, holes filled per slice (airways and sinuses stay inside)
    body = largest_component((cls != AIR) & head) if ((cls != AIR) & head).any() else np.zeros(shape, bool)
    body = fill_holes_xy(body)
    labels = np.zeros(shape, dtype=np.uint8)  # T.AIR outside

    # --- brain: grey, white, CSF; deep nuclei and brainstem from the structure labels; ventricles resized
    intracranial = largest_component(np.isin(cls, (GM, WM, CSF)) & body)
    labels[intracranial & (cls == GM)] = T.GM
    labels[intracranial & (cls == WM)] = T.WM
    labels[intracranial & (cls == CSF)] = T.CSF
    deep = np.isin(structures, _label_ids(atlas, DEEP_GREY_WORDS)) & intracranial
    labels[deep] = T.GM
    stem = np.isin(structures, _label_ids(atlas, BRAINSTEM_WORDS)) & intracranial
    labels[stem] = T.CORD
    ventricles = np.isin(structures, _label_ids(atlas, VENTRICLE_WORDS))
    vbox = _box_of(ventricles, [int(math.ceil(6.0 / s)) for s in spacing_zyx])
    if draws.ventricle_mm >= 0:
        ventricles[vbox] = _distance(ventricles[vbox], spacing_zyx) <= draws.ventricle_mm
    else:
        ventricles[vbox] &= _distance(~ventricles[vbox], spacing_zyx) > -draws.ventricle_mm
    ventricles |= np.isin(structures, _label_ids(atlas, MIDLINE_VENTRICLE_WORDS))
    labels[ventricles & intracranial] = T.CSF
    del structures, deep, stem, ventricles

    # --- skull: a closed vault of smoothly varying thickness around the cavity, where people have bone
    cbox = _box_of(intracranial, [int(math.ceil(13.0 / s)) for s in spacing_zyx])
    csub = tuple(b.stop - b.start for b in cbox)
    to_cavity = _distance(intracranial[cbox], spacing_zyx)
    thickness = draws.skull_mm + 1.2 * smooth_field(csub, spacing_zyx, 30.0, r_refine)
    np.clip(thickness, 2.5, 12.0, out=thickness)
    vault = np.zeros(shape, dtype=bool)
    vault[cbox] = (to_cavity > 0) & (to_cavity <= thickness)
    vault &= body & (cls != AIR) & p_bone  # not across the foramen magnum into the neck muscles
    other_bone = (cls == BONE) & body & ~intracranial & ~vault
    bone = vault | other_bone
    inner_table = float(r_refine.uniform(0.8, 1.6))
    outer_table = float(r_refine.uniform(1.2, 2.2))
    to_soft = _distance((body & ~bone & ~intracranial)[cbox], spacing_zyx)  # bone voxels to the soft tissue outside
    dense = np.zeros(shape, dtype=bool)
    dense[cbox] = vault[cbox] & ((to_cavity <= inner_table + 0.5 * spacing_zyx[2]) | (to_soft <= outer_table))
    labels[bone] = T.MARROW
    labels[dense] = T.CORTICAL_DENSE
    rim = other_bone & ~ndimage.binary_erosion(other_bone, iterations=1)
    labels[rim] = T.CORTICAL
    del to_cavity, to_soft, thickness, dense, rim, p_bone

    # --- soft tissue: skin, scalp fat, muscle with fat planes; air inside the head is gas
    soft = body & (labels == T.AIR) & (cls != AIR)
    depth = ndimage.distance_transform_edt(body, sampling=spacing_zyx).astype(np.float32)  # under the skin
    fat_field = smooth_field(shape, spacing_zyx, 12.0, r_refine)
    labels[soft] = T.MUSCLE
    labels[soft & (fat_field > 0.6)] = T.FAT
    skin_mm = max(1.5, spacing_zyx[1], spacing_zyx[2])  # at least one voxel of skin on coarse grids
    labels[soft & (depth <= skin_mm + draws.scalp_fat_mm * (1 + 0.3 * fat_field))] = T.FAT_SC
    labels[soft & (depth <= skin_mm)] = T.SKIN
    labels[body & (cls == AIR) & (labels == T.AIR)] = T.GAS
    diploe = vault & (labels == T.MARROW)
    padded, y, x = _pad_xy(labels, y, x, BG_MARGIN_MM)
    return padded, _pad_xy(diploe, y_in, x_in, BG_MARGIN_MM)[0], y, x


def generate_template_case(
    region: str,
    index: int,
    seed: int = 0,
    spacing: Seq[float] = (1.0, 1.0, 3.0),
    size: str = "full",
    mr_randomisation: str = "off",
) -> PhantomCase:
    """Case `index` of the template-derived heads for HN or BRAIN: identical arguments give identical images.

    The grid is the SynthRAD one (spacing x, y, z; default the HN 1 x 1 x 3 mm); size "small" as in generate_case.
    """
    t_start = time.perf_counter()
    spec = region_spec(region)
    if spec.code not in REGIONS:
        raise PhantomError(f"template heads exist for {', '.join(REGIONS)} only, not {region!r}")
    preset, (sx, sy, sz) = check_case_arguments(size, spacing, index, mr_randomisation)
    code = spec.code
    spacing_zyx = (sz, sy, sx)
    atlas = load_atlas()
    draws = draw_head(_rng(seed, code, index, 1))
    z, y, x = _case_grid(atlas, draws, spacing_zyx)
    timings = {}
    t0 = time.perf_counter()
    labels, diploe, y, x = draw_labels(atlas, draws, z, y, x, [_rng(seed, code, index, s) for s in (2, 3, 4)])
    timings["anatomy_s"] = time.perf_counter() - t0
    shape = labels.shape

    # --- CT and MR with the analytic phantoms' physics
    t0 = time.perf_counter()
    rs = _rng(seed, code, index, 5)
    centre = str(rs.choice(sorted(spec.sequences)))
    seq = SEQUENCES[spec.sequences[centre]]
    corr = max(7.0, 1.5 * max(sx, sy))
    tex = smooth_field(shape, spacing_zyx, (max(corr, 1.2 * sz), corr, corr), rs)
    age = float(rs.uniform(0, 1))
    marrow = (0.25 + 0.45 * age, 0.2)
    noise_hu = float(rs.uniform(8, 18))
    blur_w = (0.12, 0.2 * min(1.0, 1.0 / sy), 0.2 * min(1.0, 1.0 / sx))
    fov = np.ones((1, 1, 1), dtype=bool)
    y_rel = np.linspace(0, 1, shape[1], dtype=np.float32)[None, :, None]
    cts = _render_cts(
        labels, tex, marrow, y_rel, _rng(seed, code, index, 6), noise_hu, blur_w, False, False, False, fov, y, (sx, sy)
    )
    dense_diploe = blur3(diploe.astype(np.float32) * np.float32(draws.diploe_hu), blur_w)
    cts[0] += dense_diploe
    del dense_diploe, diploe
    timings["ct_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    render = dict(
        tex=tex, marrow=marrow, seq=seq, metal=[], with_banding=False, spacing_zyx=spacing_zyx, blur_w=blur_w,
        voxel_mm3=sx * sy * sz,
    )  # fmt: skip
    mr, scale = _render_mr_volume(labels, rng=_rng(seed, code, index, 7), **render)
    if mr_randomisation != "off":  # the mask is drawn on the plain MR, as for the analytic phantoms
        plain = mr
        mr, scale = _render_mr_volume(
            labels,
            rng=_rng(seed, code, index, 7),
            level=mr_randomisation,
            randomiser=_rng(seed, code, index, 8),
            **render,
        )
    else:
        plain = mr
    timings["mr_s"] = time.perf_counter() - t0

    # --- the organisers' mask on the MR, crop
    t0 = time.perf_counter()
    ct = cts[0]
    np.clip(ct, -1024, 3071, out=ct)
    full = np.ones(shape, dtype=bool)
    mask = body_mask(plain, full, preset.dilate_xy, preset.open_iter)
    box = crop_box(mask, preset.margin_xy, preset.margin_z)
    if box is None:
        raise PhantomError(f"template head {index}: empty body mask")
    ct_a = np.rint(take(ct, box, CT_OUTSIDE)).astype(np.int16)
    mr_a = np.rint(np.clip(take(mr, box, 0), 0, np.iinfo(np.int16).max)).astype(np.int16)
    mask_a = take(mask, box, False).astype(np.int16)
    labels_a = take(labels, box, 0)
    timings["mask_crop_s"] = time.perf_counter() - t0
    origin = (float(x[box[2].start]), float(y[box[1].start]), float(z[box[0].start]))
    direction = tuple(np.eye(3).ravel().tolist())
    images = _to_images((mr_a, ct_a, mask_a), (sx, sy, sz), origin, direction)
    timings["total_s"] = time.perf_counter() - t_start
    cid = f"1{spec.id_code}{TEMPLATE_CENTRE}{index:03d}"
    info = {
        "case_id": cid,
        "region": code,
        "centre": TEMPLATE_CENTRE,
        "index": index,
        "seed": seed,
        "size": size,
        "anatomy": "template",
        "anatomy_source": template_source(),
        "sequence": seq.description,
        "sequence_key": seq.key,
        "shape_zyx": list(ct_a.shape),
        "spacing_xyz": [sx, sy, sz],
        "head": {k: (list(v) if isinstance(v, tuple) else round(v, 3)) for k, v in draws.__dict__.items()},
        "mr_randomisation": mr_randomisation,
        "ct_noise_hu": round(noise_hu, 1),
        "mr_scale": round(scale, 1),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    log.debug("%s: %s", cid, info)
    return PhantomCase(cid, code, TEMPLATE_CENTRE, images[0], images[1], images[2], info, labels=labels_a, fov=None)
