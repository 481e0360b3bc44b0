"""Write phantom cases: the released layout, the grand-challenge template layout, overview pictures, a manifest."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from phantoms.anatomy import CSF_RIM_MM, SCALP_MM
from phantoms.generate import PhantomCase, PhantomError, Rates, generate_case
from phantoms.region_specs import region_spec

log = logging.getLogger(__name__)

ANATOMIES = ("analytic", "template")  # analytic shapes (phantoms/anatomy.py) or real heads (phantoms/template_head.py)


def _write_image(image: sitk.Image, path: Path) -> None:
    """Compressed .mha, written to a temporary name first so a crash never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mha", dir=path.parent, prefix=f".{path.stem}.")
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def case_dir(root: Path, case: PhantomCase) -> Path:
    """`<root>/Task1/<region folder>/<ID>` (HN, TH, AB, brain, pelvis)."""
    return Path(root) / "Task1" / case.spec.folder / case.case_id


def write_case(case: PhantomCase, root: Path, template: bool = False, overview: bool = False) -> Path:
    """Write mr/ct/mask.mha in the released layout (and optionally the template copy and the overview PNG)."""
    folder = case_dir(root, case)
    for name, image in (("mr", case.mr), ("ct", case.ct), ("mask", case.mask)):
        _write_image(image, folder / f"{name}.mha")
    if template:
        write_template(case, Path(root) / "template" / case.case_id, folder)
    if overview:
        save_overview(case, Path(root) / "overview" / f"{case.case_id}.png")
    return folder


def write_template(case: PhantomCase, target: Path, released: Path | None = None) -> Path:
    """Grand-challenge input folder: images/mri/<ID>.mha, images/body/<ID>.mha, region.json (bare string)."""
    mri = target / "images" / "mri" / f"{case.case_id}.mha"
    body = target / "images" / "body" / f"{case.case_id}.mha"
    for dst, name, image in ((mri, "mr", case.mr), (body, "mask", case.mask)):
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = None if released is None else released / f"{name}.mha"
        if src is not None and src.is_file():
            shutil.copyfile(src, dst)  # same bytes as the released copy, no second compression
        else:
            _write_image(image, dst)
    (target / "region.json").write_text(json.dumps(case.spec.display_name), encoding="utf-8")
    return target


def canonical_arrays(case: PhantomCase) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """MR, CT, mask arrays reoriented to the identity direction (z, y, x; LPS), and the spacing (x, y, z)."""
    out = []
    for image in (case.mr, case.ct, case.mask):
        out.append(sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")))
    spacing = sitk.DICOMOrient(case.ct, "LPS").GetSpacing()
    return out[0], out[1], out[2], spacing


def save_overview(case: PhantomCase, path: Path) -> Path:
    """PNG with axial, coronal and sagittal views of the MR, the CT (wide and soft-tissue windows) and the mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mr, ct, mask, (sx, sy, sz) = canonical_arrays(case)
    nz, ny, nx = ct.shape
    zc = nz // 2
    body = np.nonzero(mask.any(axis=(0, 2)))[0]
    yc = int((body[0] + body[-1]) // 2) if body.size else ny // 2
    xc = min(nx - 1, nx // 2 + int(round(8 / sx)))  # just off the midline (the falx is not anatomy worth a view)
    hi = float(np.percentile(mr[mask > 0], 99.5)) if mask.any() else float(mr.max() or 1)

    def views(a: np.ndarray) -> list[tuple[np.ndarray, float]]:
        return [(a[zc], sy / sx), (a[:, yc, :][::-1], sz / sx), (a[:, :, xc][::-1], sz / sy)]

    rows = [
        ("MR", mr, dict(cmap="gray", vmin=0, vmax=hi)),
        ("CT [-1000, 1500]", ct, dict(cmap="gray", vmin=-1000, vmax=1500)),
        ("CT [-160, 240]", ct, dict(cmap="gray", vmin=-160, vmax=240)),
        ("mask on MR", None, None),
    ]
    fig, axes = plt.subplots(4, 3, figsize=(13, 16))
    for r, (title, arr, kw) in enumerate(rows):
        for c, name in enumerate(("axial", "coronal", "sagittal")):
            ax = axes[r, c]
            if arr is None:
                img, aspect = views(mr)[c]
                m, _ = views(mask)[c]
                ax.imshow(img, cmap="gray", vmin=0, vmax=hi, aspect=aspect)
                ax.imshow(np.ma.masked_where(m == 0, m), cmap="autumn", alpha=0.35, aspect=aspect, vmin=0, vmax=1)
            else:
                img, aspect = views(arr)[c]
                ax.imshow(img, aspect=aspect, **kw)
            ax.set_title(f"{title} {name}", fontsize=9)
            ax.axis("off")
    imp = {k: v for k, v in case.info.get("imperfections", {}).items() if v}
    fig.suptitle(
        f"{case.case_id}  {case.spec.display_name}, centre {case.centre}: {case.info.get('sequence', '')}\n"
        f"{nx}x{ny}x{nz} voxels, spacing {sx:g}x{sy:g}x{sz:g} mm, orientation {case.info.get('orientation')}; "
        f"imperfections: {imp or 'none'}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


def write_dataset(
    out_dir: Path,
    regions: Sequence[str],
    cases: int,
    seed: int = 0,
    spacing: Sequence[float] = (1.0, 1.0, 3.0),
    size: str = "full",
    template_layout: bool = False,
    overview: bool = False,
    rates: Rates | None = None,
    start: int = 0,
    progress: bool | None = None,
    mr_randomisation: str = "off",
    variability: bool = False,
    csf_rim_mm: Sequence[float] = CSF_RIM_MM,
    scalp_mm: Sequence[float] = SCALP_MM,
    anatomy: str = "analytic",
) -> list[Path]:
    """Generate and write `cases` cases per region (indices start..start+cases-1); returns the case folders.

    anatomy "template" makes template-derived heads (phantoms/template_head.py; HN and BRAIN only, needs the
    spm-runtime-r2025b wheel) instead of the analytic anatomy; the imperfection rates and variability options
    apply to the analytic anatomy only.

    Also writes `<out_dir>/phantoms.json`: arguments and, per case, what was drawn (sequence, imperfections,
    geometry, timings), so a dataset can be described and regenerated exactly.
    """
    out_dir = Path(out_dir)
    specs = [region_spec(r) for r in regions]
    if anatomy not in ANATOMIES:
        raise PhantomError(f"anatomy must be one of {', '.join(ANATOMIES)}, got {anatomy!r}")
    if anatomy == "template":
        from phantoms.template_head import REGIONS as TEMPLATE_REGIONS
        from phantoms.template_head import generate_template_case

        wrong = [s.code for s in specs if s.code not in TEMPLATE_REGIONS]
        if wrong:
            raise PhantomError(
                f"template-derived anatomy exists for {', '.join(TEMPLATE_REGIONS)} only, not {', '.join(wrong)}"
            )
    jobs = [(spec.code, i) for spec in specs for i in range(start, start + cases)]
    folders, infos = [], []
    started = time.perf_counter()
    with logging_redirect_tqdm():
        for code, i in tqdm(jobs, desc="phantoms", unit="case", disable=None if progress is None else not progress):
            if anatomy == "template":
                case = generate_template_case(
                    code, i, seed=seed, spacing=spacing, size=size, mr_randomisation=mr_randomisation
                )
            else:
                case = generate_case(
                    code,
                    i,
                    seed=seed,
                    spacing=spacing,
                    size=size,
                    rates=rates,
                    mr_randomisation=mr_randomisation,
                    variability=variability,
                    csf_rim_mm=csf_rim_mm,
                    scalp_mm=scalp_mm,
                )
            folders.append(write_case(case, out_dir, template=template_layout, overview=overview))
            infos.append(case.info)
            log.debug("wrote %s (%s)", folders[-1], case.info["timings"])
    manifest = {
        "generator": "phantoms",
        "seed": seed,
        "regions": [s.code for s in specs],
        "cases_per_region": cases,
        "start_index": start,
        "spacing_xyz": list(spacing),
        "size": size,
        "rates": (rates or Rates()).__dict__,
        "mr_randomisation": mr_randomisation,
        "variability": variability,
        "csf_rim_mm": list(csf_rim_mm),
        "scalp_mm": list(scalp_mm),
        "anatomy": anatomy,
        "seconds": round(time.perf_counter() - started, 2),
        "cases": infos,
    }
    (out_dir / "phantoms.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    log.info("wrote %d cases to %s in %.1f s", len(folders), out_dir, manifest["seconds"])
    return folders
