"""Geometric fidelity (DICE, HD95) through TotalSegmentator, used only when it is installed with its weights.

The challenge runs TotalSegmentator's "total" task with the fast 3 mm model on the whole sCT (mask not applied)
and compares it with the ground-truth segmentation: MONAI Dice and 95th-percentile Hausdorff distance (mm) per
structure present in the ground truth, averaged (``../shared/docs/synthrad.md``, section 3).

TotalSegmentator downloads its weights by itself when they are missing. This module therefore checks for the
package *and* for the weights folder first and never calls it otherwise, so that nothing is ever downloaded.
Neither is available on the machines this project was built on: ``segmentation_scores`` is untested here,
kept deliberately small, and should be checked once on a machine that has TotalSegmentator.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from engine.regions import REGIONS

log = logging.getLogger(__name__)

# The fast ("3 mm") model of the "total" task, as TotalSegmentator names its folder.
TOTAL_FAST_MODEL = "Dataset297_TotalSegmentator_total_3mm_1559subj"


def scored_prefixes(region: str) -> tuple[str, ...]:
    """TotalSegmentator class-name prefixes scored for a region (engine/regions.json `scored_structures`).

    Empty for a region without a list and for an unknown one: every structure is scored then."""
    row = REGIONS.get(region)
    return row.scored_structures if row is not None else ()


def weights_dir() -> Path:
    """Where TotalSegmentator looks for its weights: $TOTALSEG_WEIGHTS_PATH, else <home>/nnunet/results."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    home = os.environ.get("TOTALSEG_HOME_DIR")
    base = Path(home) if home else Path.home() / ".totalsegmentator"
    return base / "nnunet" / "results"


def availability() -> tuple[bool, str]:
    """(True, where) when the package and the fast 'total' weights are present, else (False, why not)."""
    if importlib.util.find_spec("totalsegmentator") is None:
        return False, "the totalsegmentator package is not installed"
    for dep in ("nibabel", "torch", "monai"):
        if importlib.util.find_spec(dep) is None:
            return False, f"the {dep} package (needed with TotalSegmentator) is not installed"
    model = weights_dir() / TOTAL_FAST_MODEL
    if not model.is_dir():
        return False, f"TotalSegmentator weights not found ({model} is missing; they are never downloaded here)"
    return True, f"TotalSegmentator weights in {model}"


def _run_totalsegmentator(image_path: Path) -> np.ndarray:
    """Label map (z, y, x) of TotalSegmentator's fast 'total' task on one CT file."""
    import torch
    from totalsegmentator.python_api import totalsegmentator

    with tempfile.TemporaryDirectory(prefix="evaluation_ts_") as tmp:
        nifti = Path(tmp) / "image.nii.gz"
        sitk.WriteImage(sitk.ReadImage(str(image_path)), str(nifti))
        with torch.no_grad():
            seg = totalsegmentator(
                input=nifti,
                output=None,
                ml=True,
                fast=True,
                skip_saving=True,
                quiet=True,
                nr_thr_resamp=1,
                nr_thr_saving=1,
                device="gpu" if torch.cuda.is_available() else "cpu",
            )
    return np.asarray(seg.dataobj).astype(np.int16).transpose(2, 1, 0)


def _structure_labels(region: str) -> dict[int, str]:
    """Label value -> name of the structures scored for `region`."""
    from totalsegmentator.map_to_binary import class_map

    names = class_map["total"]
    prefixes = scored_prefixes(region)
    if not prefixes:
        return dict(names)
    return {label: name for label, name in names.items() if name.startswith(prefixes)}


class TotalSegmentatorSegmenter:
    """The challenge's segmenter: TotalSegmentator's fast 'total' task (needs its package and local weights).

    Point it at local weights with TOTALSEG_WEIGHTS_PATH (the folder holding the Dataset297_... model) or
    TOTALSEG_HOME_DIR (whose nnunet/results holds it); it is never called when they are missing.
    """

    name = "totalsegmentator"

    def segment(self, image_path: Path) -> np.ndarray:
        return _run_totalsegmentator(image_path)

    def labels(self, region: str) -> dict[int, str]:
        return _structure_labels(region)


class ThresholdSegmenter:
    """A stand-in segmenter from HU thresholds: 1 bone (> 250 HU), 2 soft tissue (-200..250), 3 lung (-950..-400).

    Not TotalSegmentator: it exercises the Dice/HD95 path end to end where its weights are missing, and is a cheap
    anatomy-consistency check in its own right (it needs no network).
    """

    name = "threshold"

    def segment(self, image_path: Path) -> np.ndarray:
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path))).astype(np.float32)
        labels = np.zeros(hu.shape, dtype=np.int16)
        labels[(hu > -200) & (hu <= 250)] = 2
        labels[(hu > -950) & (hu <= -400)] = 3
        labels[hu > 250] = 1
        return labels

    def labels(self, region: str) -> dict[int, str]:
        return {1: "bone", 2: "soft_tissue", 3: "lung"}


def make_segmenter(kind: str):
    """(segmenter or None, status line): 'auto' (TotalSegmentator when available), 'totalsegmentator', 'threshold'."""
    if kind == "threshold":
        return ThresholdSegmenter(), "computed: the threshold stand-in segmenter (not TotalSegmentator)"
    ok, reason = availability()
    if ok:
        return TotalSegmentatorSegmenter(), f"computed: {reason}"
    if kind == "totalsegmentator":
        raise ValueError(f"--segmenter totalsegmentator: {reason}")
    return None, f"skipped: {reason}"


def segmentation_scores(
    sct_path: Path,
    ct_path: Path,
    gt_segmentation: Path | None,
    region: str,
    spacing_zyx: tuple[float, ...],
    segmenter=None,
) -> dict[str, float]:
    """Mean Dice and HD95 (mm) over the scored structures present in the ground-truth segmentation.

    The ground-truth segmentation is the case folder's ``segmentation`` image when there is one (as the
    organisers provide), else the segmenter's own segmentation of the ground-truth CT. The segmenter defaults
    to TotalSegmentator.
    """
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    segmenter = segmenter or TotalSegmentatorSegmenter()
    pred = segmenter.segment(sct_path)
    if gt_segmentation is not None:
        gt = sitk.GetArrayFromImage(sitk.ReadImage(str(gt_segmentation)))
    else:
        gt = segmenter.segment(ct_path)
    if gt.shape != pred.shape:
        raise ValueError(f"segmentation shapes differ: ground truth {gt.shape}, sCT {pred.shape}")
    dices, hd95s = [], []
    for label in segmenter.labels(region):
        g = gt == label
        if not g.any():
            continue
        g_t = torch.from_numpy(g)[None, None]
        p_t = torch.from_numpy(pred == label)[None, None]
        dices.append(float(compute_dice(p_t, g_t, include_background=True).item()))
        hd95s.append(
            float(
                compute_hausdorff_distance(
                    p_t, g_t, include_background=True, percentile=95, spacing=list(spacing_zyx)
                ).item()
            )
        )
    if not dices:
        return {"dice": float("nan"), "hd95": float("nan")}
    return {"dice": float(np.mean(dices)), "hd95": float(np.mean(hd95s))}
