"""How deep the cranium lies under the skin: the real head of the real-MR check against phantom heads.

A network trained on phantoms that all share one scalp thickness can learn where the skull lies from the skin
alone; on a real head with a thicker scalp it would then paint the skull too far out. This measures, over the
cranium (the slices from the widest brain slice up), the distance from the cranial cavity's surface to the skin:
on the real head from its brain (grey + white matter, so the CSF under the skull is included in the distance), on
phantoms from the inner table of the skull (their CSF rim is inside the cavity, so add it: 0.3-1.5 mm for the
thin-rim sets). Percentiles over the cavity's surface voxels, in mm.

    python experiments/head_geometry.py --prepared runs/real_mr_csf/case \
        --data data/phantoms_var5_hn data/phantoms_var7_hn --out docs/results/real_mr_transfer/head_geometry.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from phantoms.masks import body_mask  # noqa: E402

log = logging.getLogger("head_geometry")
PERCENTILES = (10, 25, 50, 75, 90)


def _array(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(float(v) for v in image.GetSpacing()[::-1])


def cavity_depth_mm(head: np.ndarray, cavity: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Distance to the outside of the head of every surface voxel of the cranial cavity (its largest connected
    part), from its widest slice towards the vertex: the side on which the cavity runs on for more slices (it
    narrows slowly to the vertex and ends abruptly at the skull base; phantoms come in either z direction)."""
    parts, count = ndimage.label(cavity)
    if count == 0:
        raise ValueError("no cranial cavity in this image")
    cavity = parts == 1 + int(np.argmax(ndimage.sum(cavity, parts, range(1, count + 1))))
    areas = cavity.sum(axis=(1, 2))
    widest, slices = int(np.argmax(areas)), np.flatnonzero(areas)
    upper = np.zeros(cavity.shape, dtype=bool)
    if slices[-1] - widest >= widest - slices[0]:
        upper[widest:] = True
    else:
        upper[: widest + 1] = True
    surface = cavity & ~ndimage.binary_erosion(cavity) & upper
    depth = ndimage.distance_transform_edt(head, sampling=spacing_zyx)
    return depth[surface]


def real_head(folder: Path) -> np.ndarray:
    """The prepared real head (experiments/real_mr.py): the head is the organisers' body mask without its
    10-voxel dilation, the cavity the template's brain."""
    mr, spacing = _array(folder / "mr.mha")
    brain, _ = _array(folder / "brain.mha")
    head = body_mask(mr.astype(np.float32), np.ones(mr.shape, dtype=bool), dilate_xy=0)
    return cavity_depth_mm(head, brain > 0, spacing)


def phantom_head(folder: Path) -> np.ndarray:
    """A head-and-neck phantom: the head is its CT above -500 HU, the cavity what the skull encloses in each axial
    slice (the calvarium is a closed ring there)."""
    ct, spacing = _array(folder / "ct.mha")
    bone = ct > 300
    cavity = np.stack([ndimage.binary_fill_holes(s) for s in bone]) & ~bone
    return cavity_depth_mm(ndimage.binary_fill_holes(ct > -500), cavity, spacing)


def summary(depths: np.ndarray) -> dict:
    return {f"p{p}": round(float(np.percentile(depths, p)), 1) for p in PERCENTILES} | {"voxels": int(depths.size)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, required=True, help="a prepared real head (mr/brain.mha)")
    parser.add_argument("--data", type=Path, nargs="+", default=[], help="phantom roots with Task1/HN cases")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = {"real_head": {"case": str(args.prepared)} | summary(real_head(args.prepared)), "phantoms": {}}
    log.info("real head: %s", report["real_head"])
    for root in args.data:
        per_case = {}
        for folder in sorted((root / "Task1" / "HN").iterdir()):
            per_case[folder.name] = summary(phantom_head(folder))
        medians = [v["p50"] for v in per_case.values()]
        report["phantoms"][str(root)] = {
            "case_medians_min": min(medians),
            "case_medians_max": max(medians),
            "case_medians_mean": round(float(np.mean(medians)), 1),
            "cases": per_case,
        }
        log.info("%s: case medians %.1f-%.1f mm", root, min(medians), max(medians))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
