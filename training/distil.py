"""Distillation targets: a data root whose training cases carry a teacher's sCT (blended with the CT) as their CT.

    python -m training.distil --teacher l1_folds --data data/phantoms_final \
        --split configs/splits/phantoms_final.json --out data/distil_l1_folds --teacher-weight 0.7
    python -m training.train --config configs/drifting.toml --set model.kind=l1 \
        --set data.root=data/distil_l1_folds --set data.split=configs/splits/phantoms_final.json ...

Why a data root and not a loss term: the student then trains with the unchanged trainer (crops, validation,
export), and the teacher is exactly what ships: every training case goes through `process.py` with the teacher
entry (an ensemble with flip TTA included), restored onto the case's grid like any output. Each training case's
`ct.mha` in the new root is `w * teacher + (1 - w) * CT` inside the body (the CT outside it), rounded to int16;
`mr.mha` and `mask.mha` are hard links (copies across file systems). Validation cases are linked unchanged, so
validation still scores against the real CT; test cases are never read. The teacher's own sCTs are kept
(`teacher/<id>.mha`), so a stopped run resumes and a different weight needs no second teacher pass.
`distil.json` records the teacher, its manifest's sha256, the weight and the cases.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("training.distil")


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows it, else a copy (the targets are never modified in place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def teacher_sct(case_dir: Path, region: str, teacher: str, manifest: Path, out: Path) -> Path:
    """The teacher's sCT of one case (process.py, CPU), kept at `out` and reused when already there."""
    if out.is_file():
        return out
    import process

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.stem}.partial.mha")
    arguments = ["--mr", str(case_dir / "mr.mha"), "--mask", str(case_dir / "mask.mha"), "--region", region]
    arguments += ["--out", str(partial), "--manifest", str(manifest), "--model", teacher, "--device", "cpu"]
    status = process.main(arguments + ["--no-progress"])
    if status != 0 or not partial.is_file():
        raise RuntimeError(f"{case_dir}: the teacher {teacher!r} failed (process.py exit {status})")
    os.replace(partial, out)
    return out


def blended_ct(ct: sitk.Image, teacher: sitk.Image, mask: sitk.Image, weight: float) -> sitk.Image:
    """`weight * teacher + (1 - weight) * CT` inside the body, the CT outside, as int16 on the CT's grid."""
    ct_a = sitk.GetArrayFromImage(ct).astype(np.float32)
    teacher_a = sitk.GetArrayFromImage(teacher).astype(np.float32)
    if teacher_a.shape != ct_a.shape:
        raise ValueError(f"teacher sCT shape {teacher_a.shape} != CT shape {ct_a.shape}")
    body = sitk.GetArrayFromImage(mask) > 0
    target = np.where(body, weight * teacher_a + (1.0 - weight) * ct_a, ct_a)
    image = sitk.GetImageFromArray(np.clip(np.rint(target), -32768, 32767).astype(np.int16))
    image.CopyInformation(ct)
    return image


def build_distillation_root(
    data: Path,
    split_path: Path,
    out: Path,
    teacher: str,
    manifest: Path,
    weight: float,
    regions: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Write the distillation root (see the module docstring); returns the record written to distil.json."""
    from training.dataset import find_cases
    from training.splits import load_split

    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"--teacher-weight must be in [0, 1], got {weight}")
    split = load_split(split_path)
    cases = find_cases(data, regions)
    train = split.select(cases, "train")
    val = split.select(cases, "val")
    if not train:
        raise ValueError(f"{data}: no training cases of {split_path} found")
    record = {
        "teacher": teacher,
        "manifest": str(manifest),
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "teacher_weight": weight,
        "source": str(data),
        "split": str(split_path),
        "train": [d.name for d, _ in train],
        "val": [d.name for d, _ in val],
    }
    for case_dir, _ in val:
        for name in ("mr.mha", "ct.mha", "mask.mha"):
            link_or_copy(case_dir / name, out / case_dir.relative_to(data) / name)
    for case_dir, region in tqdm(train, desc=f"teacher {teacher}", unit="case", disable=not progress):
        target = out / case_dir.relative_to(data)
        sct_path = teacher_sct(case_dir, region, teacher, manifest, out / "teacher" / f"{case_dir.name}.mha")
        for name in ("mr.mha", "mask.mha"):
            link_or_copy(case_dir / name, target / name)
        ct = sitk.ReadImage(str(case_dir / "ct.mha"))
        image = blended_ct(ct, sitk.ReadImage(str(sct_path)), sitk.ReadImage(str(case_dir / "mask.mha")), weight)
        partial = target / "ct.partial.mha"
        sitk.WriteImage(image, str(partial), useCompression=True)
        os.replace(partial, target / "ct.mha")
    (out / "distil.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    from engine.manifest import DEFAULT_MANIFEST

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="l1_folds", help="manifest entry whose sCTs the student learns")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest holding the teacher")
    parser.add_argument("--data", type=Path, required=True, help="data root (<REGION>/<ID>/{mr,ct,mask}.mha)")
    parser.add_argument("--split", type=Path, required=True, help="split file: its train cases get teacher targets")
    parser.add_argument("--out", type=Path, required=True, help="the distillation data root to write")
    parser.add_argument(
        "--teacher-weight", type=float, default=0.7, help="share of the teacher in the target (the rest: the CT)"
    )
    parser.add_argument("--regions", default="", help="comma-separated regions (default: every region found)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    regions = [r for r in args.regions.split(",") if r] or None
    try:
        record = build_distillation_root(
            args.data, args.split, args.out, args.teacher, args.manifest, args.teacher_weight, regions,
            progress=not args.no_progress,
        )  # fmt: skip
    except (ValueError, RuntimeError) as err:
        LOG.error("%s", err)
        return 2
    LOG.warning("wrote %s: %d training cases with %s targets", args.out, len(record["train"]), args.teacher)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
