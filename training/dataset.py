"""Training data from the released layout, through the very preprocessing the inference pipeline runs.

`load_volume` calls `preprocessing.prepare_case` with the manifest entry the model will ship with, then moves
the paired CT and the mask into the same model space: training and inference cannot disagree on normalisation,
orientation, spacing or padding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from engine.ensemble import LEFT_RIGHT_AXIS
from engine.manifest import ModelSpec
from engine.regions import RegionError, canonical_region
from modelspec import HU_MAX, HU_MIN, hu_to_normalised, normalised_to_hu
from phantoms.randomise import Randomisation, ct_classes, randomise_normalised
from preprocessing import Prepared, prepare_case, to_model_space

LOG = logging.getLogger(__name__)


@dataclass
class TrainingVolume:
    """One paired case in model space (float32 [slices, H, W]) plus what validation needs to score it."""

    case_id: str
    region: str
    case_dir: Path
    mr: np.ndarray  # normalised MR
    ct: np.ndarray  # CT in [-1, 1] over the spec's HU window
    mask: np.ndarray  # 0/1 body mask
    prepared: Prepared | None  # how to go back to the input grid (validation scores there); None from the cache


def find_cases(root: Path, regions: list[str] | None = None) -> list[tuple[Path, str]]:
    """(case folder, region code) for every `<REGION>/<ID>/` holding mr, ct and mask images under `root`."""
    wanted = None if regions is None else {canonical_region(r) for r in regions}
    found = []
    for mr in sorted(Path(root).rglob("mr.mha"), key=lambda p: p.parent.name):
        case_dir = mr.parent
        if not (case_dir / "ct.mha").is_file() or not (case_dir / "mask.mha").is_file():
            continue
        try:
            region = canonical_region(case_dir.parent.name)
        except RegionError:
            continue
        if wanted is None or region in wanted:
            found.append((case_dir, region))
    return found


RELEASE_FILES = ("mr.mha", "ct.mha", "mask.mha")
RELEASE_LAYOUT = "Task1/<region>/<id>/{mr,ct,mask}.mha"


def release_cases(root: Path, regions: list[str]) -> list[tuple[Path, str]]:
    """(case folder, region code) of every case of the official release layout under `root`, checked strictly.

    `root` is the release's Task1 folder or the folder that holds it. Every region asked for must have its folder,
    and every case folder in it must hold mr.mha, ct.mha and mask.mha; anything else is one TrainingError naming
    the folder and what is wrong (a training run on half a release, or on another layout, is a mistake to stop).
    """
    from training.errors import TrainingError

    root = Path(root)
    if not root.is_dir():
        raise TrainingError(
            f"data.root {root}: no such folder; expected the SynthRAD2025 release ({RELEASE_LAYOUT}): "
            "its Task1 folder or the folder that holds it"
        )
    task = root / "Task1" if (root / "Task1").is_dir() else root
    folders: dict[str, Path] = {}
    for child in sorted(task.iterdir()):
        try:
            code = canonical_region(child.name)
        except RegionError:
            continue
        if child.is_dir():
            folders.setdefault(code, child)
    wanted = [canonical_region(region) for region in regions]
    missing = [code for code in wanted if code not in folders]
    if missing:
        found = ", ".join(sorted(child.name for child in task.iterdir())[:8]) or "nothing"
        raise TrainingError(
            f"data.root {root}: no region folder for {', '.join(missing)} in {task} (it holds: {found}); "
            f"expected the release layout {RELEASE_LAYOUT}"
        )
    cases = []
    for code in wanted:
        case_dirs = sorted(child for child in folders[code].iterdir() if child.is_dir())
        if not case_dirs:
            raise TrainingError(f"{folders[code]}: no case folders; expected {RELEASE_LAYOUT}")
        for case_dir in case_dirs:
            absent = [name for name in RELEASE_FILES if not (case_dir / name).is_file()]
            if absent:
                held = ", ".join(sorted(item.name for item in case_dir.iterdir())[:6]) or "nothing"
                raise TrainingError(
                    f"{case_dir}: missing {', '.join(absent)} (it holds: {held}); every case of the release layout "
                    f"{RELEASE_LAYOUT} holds mr.mha, ct.mha and mask.mha"
                )
            cases.append((case_dir, code))
    return sorted(cases, key=lambda case: case[0].name)


def split_cases(cases: list[tuple[Path, str]], val_per_region: int, seed: int) -> tuple[list, list]:
    """Hold out `val_per_region` cases of every region (seeded), the rest trains."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for region in sorted({r for _, r in cases}):
        members = [c for c in cases if c[1] == region]
        order = rng.permutation(len(members))
        held = set(order[: min(val_per_region, max(0, len(members) - 1))].tolist())
        for index, case in enumerate(members):
            (val if index in held else train).append(case)
    return train, val


def load_volume(case_dir: Path, region: str, spec: ModelSpec, compact: bool = False) -> TrainingVolume:
    """Read mr/ct/mask of one case and bring all three into the model space of `spec`.

    `compact` keeps MR and CT as float16 and the mask as uint8 (5 instead of 12 bytes a voxel), so that dozens
    of whole training volumes fit in memory; validation volumes stay float32, exactly as inference sees them.
    """
    prepared = prepare_case(case_dir / "mr.mha", case_dir / "mask.mha", spec)
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "ct.mha"))).astype(np.float32)
    if ct.shape != prepared.mask.shape:
        raise ValueError(f"{case_dir / 'ct.mha'}: CT shape {ct.shape} != MR shape {prepared.mask.shape}")
    low, high = spec.ct_window_hu
    np.clip(ct, low, high, out=ct)
    ct = hu_to_normalised(ct, spec.ct_window_hu).astype(np.float32)
    ct_model = to_model_space(ct, prepared, pad_value=-1.0)
    mask_model = to_model_space(prepared.mask, prepared, pad_value=0.0, binary=True)
    mr_model = prepared.volume
    if compact:
        mr_model, ct_model, mask_model = (
            mr_model.astype(np.float16),
            ct_model.astype(np.float16),
            mask_model.astype(np.uint8),
        )
        prepared.volume = None
    return TrainingVolume(case_dir.name, region, case_dir, mr_model, ct_model, mask_model, prepared)


def _body_slices(mask: np.ndarray, min_fraction: float = 0.02) -> np.ndarray:
    per_slice = mask.reshape(mask.shape[0], -1).mean(axis=1, dtype=np.float64)
    chosen = np.flatnonzero(per_slice >= min_fraction)
    return chosen if chosen.size else np.arange(mask.shape[0])


class SliceCrops(Dataset):
    """Random 2.5D crops (MR stack, CT, mask) from slices that hold body; each item seeded by (seed, epoch, index).

    With `randomisation` on, each crop's MR stack gets new contrast and artefacts (phantoms/randomise.py); the
    tissue labels for redrawn contrasts are CT-number classes of the crop's CT, so real training data (which has
    no labels) randomises the same way. The CT target is never touched.
    """

    def __init__(
        self,
        volumes: list[TrainingVolume],
        context_slices: int,
        crop: int,
        length: int,
        mr_outside: float,
        seed: int = 0,
        randomisation: Randomisation | None = None,
        ct_window_hu: tuple[float, float] = (HU_MIN, HU_MAX),
        region_balanced: bool = False,
        keep_histogram: bool = False,
        extra: list[bool] | None = None,
        extra_share: float = 0.0,
        flip_probability: float = 0.0,
    ):
        if not volumes:
            raise ValueError("no training volumes")
        # a second source (data.extra_root) at a fixed share of the crops, whatever its number of volumes; the rest
        # drawn from the other volumes as below
        self.extra_share = float(extra_share)
        self.extra = [i for i, flag in enumerate(extra or []) if flag]
        if not 0.0 <= self.extra_share < 1.0:
            raise ValueError(f"extra_share must be in [0, 1), got {extra_share}")
        if self.extra_share and (not self.extra or len(self.extra) == len(volumes)):
            raise ValueError("extra_share needs volumes from both the extra root and the main root")
        extra_set = set(self.extra)
        others = [i for i in range(len(volumes)) if i not in extra_set] if self.extra_share else None
        # region-balanced: each crop first draws a region uniformly, then one of its volumes (a release has about
        # twice as many cases of one region as of another); otherwise every volume is equally likely
        pool = others if others is not None else list(range(len(volumes)))
        self.pool = pool
        self.by_region = [
            [i for i in pool if volumes[i].region == region] for region in sorted({volumes[i].region for i in pool})
        ]
        self.region_balanced = region_balanced
        self.volumes = volumes
        self.context = context_slices
        self.crop = crop
        self.length = length
        self.mr_outside = mr_outside
        self.seed = seed
        self.epoch = 0
        self.slices = [_body_slices(v.mask) for v in volumes]
        self.randomisation = (randomisation or Randomisation()).check()
        self.ct_window_hu = ct_window_hu
        self.keep_histogram = keep_histogram  # randomised crops keep their histogram (histogram-standardised models)
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
        self.flip_probability = float(flip_probability)

    def _mirrored(self, index: int) -> bool:
        """Whether crop `index` of this epoch is mirrored left-right (its own generator, seeded like the crop)."""
        return bool(np.random.default_rng([self.seed, self.epoch, index, 11]).random() < self.flip_probability)

    def set_epoch(self, epoch: int) -> None:
        """New crops every epoch, reproducibly."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.extra_share and rng.random() < self.extra_share:
            which = self.extra[int(rng.integers(len(self.extra)))]
        elif self.region_balanced:
            members = self.by_region[int(rng.integers(len(self.by_region)))]
            which = members[int(rng.integers(len(members)))]
        else:
            which = self.pool[int(rng.integers(len(self.pool)))]
        volume = self.volumes[which]
        centre = int(rng.choice(self.slices[which]))
        half = self.context // 2
        indices = np.clip(np.arange(centre - half, centre + half + 1), 0, volume.mr.shape[0] - 1)
        height, width = volume.mr.shape[1:]
        crop_h, crop_w = min(self.crop, height), min(self.crop, width)
        # Centre the crop on a random body voxel of the slice, kept inside the image.
        ys, xs = np.nonzero(volume.mask[centre])
        if ys.size:
            pick = int(rng.integers(ys.size))
            top = int(np.clip(ys[pick] - crop_h // 2, 0, height - crop_h))
            left = int(np.clip(xs[pick] - crop_w // 2, 0, width - crop_w))
        else:
            top, left = int(rng.integers(height - crop_h + 1)), int(rng.integers(width - crop_w + 1))
        window = (slice(top, top + crop_h), slice(left, left + crop_w))
        mr = volume.mr[indices][:, window[0], window[1]].astype(np.float32)
        ct = volume.ct[centre][window][None].astype(np.float32)
        mask = volume.mask[centre][window][None].astype(np.float32)
        if self.randomisation.level != "off":
            stack_mask = volume.mask[indices][:, window[0], window[1]] > 0

            def labels() -> np.ndarray:  # CT-number classes, computed only when a contrast is redrawn
                stack_ct = volume.ct[indices][:, window[0], window[1]].astype(np.float32)
                return ct_classes(normalised_to_hu(stack_ct, self.ct_window_hu), stack_mask)

            mr, _ = randomise_normalised(
                mr,
                labels,
                stack_mask,
                np.random.default_rng([self.seed, self.epoch, index, 7]),
                self.randomisation,
                self.mr_outside,
                keep_histogram=self.keep_histogram,
            )
        # Left-right mirroring: a body is near-symmetric, so the mirrored pair is a new training pair; a network
        # that never saw one is not mirror-consistent, which is what flip test-time augmentation averages away.
        # Its own generator, so the crops drawn above do not depend on whether it is on.
        if self.flip_probability and self._mirrored(index):
            mr, ct, mask = (np.flip(array, LEFT_RIGHT_AXIS) for array in (mr, ct, mask))
        if (crop_h, crop_w) != (self.crop, self.crop):  # small images: pad to the crop size
            pad = ((0, 0), (0, self.crop - crop_h), (0, self.crop - crop_w))
            mr = np.pad(mr, pad, constant_values=self.mr_outside)
            ct = np.pad(ct, pad, constant_values=-1.0)
            mask = np.pad(mask, pad, constant_values=0.0)
        return {
            "mr": torch.from_numpy(np.ascontiguousarray(mr, dtype=np.float32)),
            "ct": torch.from_numpy(np.ascontiguousarray(ct, dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)),
        }
