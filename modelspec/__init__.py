"""What a model is, shared by every stage: the model spec, the MR normalisation and the HU <-> network mapping.

The pipeline's stages (preprocessing, the engine, postprocessing) and the trainer all read these; nothing here
imports any of them, so imports run one way: process -> pipeline -> stages -> modelspec. The manifest
(`engine/manifest.py`) builds `ModelSpec`s from `model_weights/manifest.json`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The HU window of every shipped model and of the challenge's ground truth (int16 CT clipped to it).
HU_MIN, HU_MAX = -1024.0, 3071.0


class ManifestError(ValueError):
    """The manifest is malformed, or a file it names is missing or fails its checksum."""


@dataclass(frozen=True)
class Normalisation:
    """MR intensity normalisation inside the body mask.

    The MR is clipped to the given percentiles of its in-mask voxels, then either z-scored with the in-mask mean
    and standard deviation (`zscore`) or mapped linearly so the percentiles land on -1 and 1 (`minmax`).
    Voxels outside the mask (and padding) get `outside_value`.

    `landmarks` (empty: off) first standardises the histogram (Nyul and Udupa's piecewise-linear landmark method,
    as TorchIO's HistogramStandardization): each (percentile, value) pair maps that in-mask percentile of the MR
    onto the value, linearly in between and clamped beyond the end pairs. Every MR then reaches the network with
    the same in-mask histogram at the landmarks, whatever its scanner, sequence or averaging; the values are fitted
    to the training set (`python -m training.landmarks`) and travel with the model.
    """

    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    method: str = "zscore"
    outside_value: float = 0.0
    landmarks: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class ModelFile:
    """One file of a model, with the checksum it must have."""

    role: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """One manifest model entry with the defaults applied: everything needed to run (or train) it."""

    name: str
    kind: str
    files: tuple[ModelFile, ...]
    spacing_xy_mm: tuple[float, float] | None
    context_slices: int
    divisible_by: int
    normalisation: Normalisation
    ct_window_hu: tuple[float, float]
    output_dtype: str
    outside_fill_hu: float
    sampler: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: kind "ensemble": the member models whose predictions it averages (each with its own files and kind)
    members: tuple[ModelSpec, ...] = ()
    #: average the prediction with the left-right mirrored prediction of the mirrored input (test-time augmentation)
    flip_tta: bool = False

    def file(self, role: str) -> Path:
        """Path of the file with this role (e.g. 'generator')."""
        for item in self.files:
            if item.role == role:
                return item.path
        raise ManifestError(f"model {self.name!r} has no {role!r} file")

    def verify_files(self) -> None:
        """Check that every file exists and matches its sha256; raise ManifestError naming the first that fails.

        An ensemble verifies every member's files."""
        for member in self.members:
            member.verify_files()
        for item in self.files:
            if not item.path.is_file():
                raise ManifestError(f"{item.path}: model file missing (model {self.name!r}, role {item.role!r})")
            actual = sha256_of(item.path)
            if actual != item.sha256:
                raise ManifestError(
                    f"{item.path}: checksum mismatch (model {self.name!r}): expected {item.sha256}, got {actual}"
                )

    def settings(self) -> dict[str, Any]:
        """The shared settings as a manifest entry states them (what the trainer stores and the exporter writes)."""
        return {
            "spacing_xy_mm": None if self.spacing_xy_mm is None else list(self.spacing_xy_mm),
            "context_slices": self.context_slices,
            "divisible_by": self.divisible_by,
            "mr_normalisation": {
                "clip_percentiles": list(self.normalisation.clip_percentiles),
                "method": self.normalisation.method,
                "outside_value": self.normalisation.outside_value,
                # only when on, so every earlier entry (and its preprocessing cache key) reads as before
                **(
                    {"landmarks": [list(pair) for pair in self.normalisation.landmarks]}
                    if self.normalisation.landmarks
                    else {}
                ),
            },
            "ct_window_hu": list(self.ct_window_hu),
            "output_dtype": self.output_dtype,
            "outside_fill_hu": self.outside_fill_hu,
            "sampler": dict(self.sampler),
        }


def hu_to_normalised(hu: np.ndarray | float, window: tuple[float, float]) -> np.ndarray | float:
    """Map HU linearly so the window's ends land on -1 and 1 (the networks' output space)."""
    low, high = window
    return (np.asarray(hu, dtype=np.float32) - low) / (high - low) * 2.0 - 1.0


def normalised_to_hu(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Inverse of `hu_to_normalised`, in place on float32 arrays to keep peak memory low."""
    low, high = window
    values *= (high - low) / 2.0
    values += (high + low) / 2.0
    return values


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large weights do not load into memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
