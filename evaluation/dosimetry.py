"""Dosimetric proxies of an sCT against its CT, without a dose engine: range (WEPL), electron density, bone overlap.

An sCT exists to compute dose, and image metrics correlate only moderately with dose (proton plans are the
sensitive ones). Physicists judge an sCT without a dose engine from physical quantities derived from HU:

- HU -> relative stopping power (RSP, protons) and relative electron density (RED, photons) by a piecewise-linear
  calibration curve (`calibration/generic_schneider.csv` by default, a scanner's own table with --calibration);
- water-equivalent path length (WEPL) from the entrance of each beam to every body voxel: the cumulative sum of
  RSP x voxel size along the beam. Beams are coplanar, in the image's axial (array) plane: 0 degrees travels along
  +y (array rows), 90 along +x, 180 along -y, 270 along -x; those four are exact voxel traversals, any other angle
  rotates the RSP volume in-plane (bilinear) so the beam runs along an axis (isotropic in-plane spacing needed).
  Reported per beam and averaged: mean and 95th percentile of |WEPL_sCT - WEPL_CT| in the body (mm), and the mean
  relative range error |dWEPL| / WEPL_CT (%) over body voxels at least 10 mm deep;
- RED error in the body (mean absolute and mean signed);
- bone Dice between CT and sCT at HU thresholds (default 250 and 600 HU).

Outside the body mask both images are set to air first, so the couch and anything else outside the body (which
the sCT does not model) never enter the comparison.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.metrics import HU_MAX, HU_MIN

DEFAULT_CALIBRATION = Path(__file__).resolve().parent / "calibration" / "generic_schneider.csv"
DEFAULT_BEAMS = (0.0, 90.0, 180.0, 270.0)
DEFAULT_BONE_HU = (250.0, 600.0)
AIR_HU = -1000.0
LUT_LOW, LUT_HIGH = int(HU_MIN), int(HU_MAX)  # the CT's stored range, the challenge's clip
MIN_DEPTH_MM = 10.0  # the relative range error is taken only this deep, where WEPL_CT is not close to zero
#: The metrics this module adds, in report order (per-beam ones follow as <name>_<angle>deg).
DOSIMETRY_METRICS = ("wepl_mae_mm", "wepl_p95_mm", "range_error_pct", "red_mae", "red_me")


class CalibrationError(ValueError):
    """A calibration table that cannot be used."""


@dataclass(frozen=True)
class Calibration:
    """HU -> RSP and HU -> RED, piecewise linear between the rows, constant beyond the ends."""

    hu: np.ndarray
    rsp: np.ndarray
    red: np.ndarray
    source: str = field(default="", compare=False)

    def to_rsp(self, hu: np.ndarray) -> np.ndarray:
        return self._lookup(hu, self.rsp)

    def to_red(self, hu: np.ndarray) -> np.ndarray:
        return self._lookup(hu, self.red)

    def __post_init__(self) -> None:
        whole_hu = np.arange(LUT_LOW, LUT_HIGH + 1, dtype=np.float64)
        tables = {
            id(self.rsp): np.interp(whole_hu, self.hu, self.rsp).astype(np.float32),
            id(self.red): np.interp(whole_hu, self.hu, self.red).astype(np.float32),
        }
        object.__setattr__(self, "_tables", tables)  # built once per table, not once per volume

    def _lookup(self, hu: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The curve at whole HU over [-1024, 3071] (the CT's stored range), read by table: np.interp on a whole
        volume costs 20x more. HU are rounded to whole numbers first (exact for the int16 CTs and sCTs)."""
        table = self._tables[id(values)]
        index = np.clip(np.rint(np.asarray(hu, dtype=np.float32)), LUT_LOW, LUT_HIGH).astype(np.int32) - LUT_LOW
        return table[index]


def load_calibration(path: Path | str = DEFAULT_CALIBRATION) -> Calibration:
    """Read a CSV with columns hu, rsp, red (lines starting with # are comments); checks monotonicity."""
    path = Path(path)
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    except OSError as err:
        raise CalibrationError(f"{path}: cannot read the calibration table ({err.strerror or err})") from err
    rows = list(csv.DictReader(lines))
    if not rows or not {"hu", "rsp", "red"} <= set(rows[0]):
        raise CalibrationError(f"{path}: a calibration table needs the columns hu, rsp, red")
    try:
        table = np.array([[float(r["hu"]), float(r["rsp"]), float(r["red"])] for r in rows], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CalibrationError(f"{path}: every hu, rsp and red must be a number") from err
    if len(table) < 2 or not np.all(np.isfinite(table)):
        raise CalibrationError(f"{path}: need at least two rows of finite numbers")
    hu, rsp, red = table.T
    if np.any(np.diff(hu) <= 0):
        raise CalibrationError(f"{path}: hu must increase strictly from row to row")
    for name, values in (("rsp", rsp), ("red", red)):
        if np.any(values < 0) or np.any(np.diff(values) < 0):
            raise CalibrationError(f"{path}: {name} must be non-negative and never decrease with hu")
    return Calibration(hu, rsp, red, str(path))


def _rotate(volume: np.ndarray, angle: float, fill: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.rotate(volume, angle, axes=(1, 2), reshape=True, order=1, mode="constant", cval=fill)


def wepl_map(rsp: np.ndarray, spacing_zyx: tuple[float, float, float], angle_deg: float) -> np.ndarray:
    """WEPL (mm) from the beam's entrance to each voxel centre of rsp (z, y, x) for one coplanar beam."""
    _, sy, sx = (float(s) for s in spacing_zyx)
    angle = float(angle_deg) % 360.0
    exact = {0.0: (1, False, sy), 90.0: (2, False, sx), 180.0: (1, True, sy), 270.0: (2, True, sx)}
    if angle in exact:
        axis, reverse, step = exact[angle]
        values = np.flip(rsp, axis) if reverse else rsp
        path = np.cumsum(values, axis=axis, dtype=np.float32) * np.float32(step) - np.float32(0.5 * step) * values
        return np.ascontiguousarray(np.flip(path, axis) if reverse else path, dtype=np.float32)
    if not math.isclose(sx, sy, rel_tol=1e-4):
        raise ValueError(f"an oblique beam ({angle_deg} degrees) needs isotropic in-plane spacing, got {sx} x {sy} mm")
    fill = float(rsp.min())
    turned = _rotate(rsp.astype(np.float32), angle, fill)  # the beam now runs along +y (array rows)
    path = np.cumsum(turned, axis=1, dtype=np.float64) * sy - 0.5 * sy * turned
    back = _rotate(path.astype(np.float32), -angle, 0.0)
    dy = (back.shape[1] - rsp.shape[1]) // 2
    dx = (back.shape[2] - rsp.shape[2]) // 2
    return np.ascontiguousarray(back[:, dy : dy + rsp.shape[1], dx : dx + rsp.shape[2]])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def dosimetric_scores(
    ct: np.ndarray,
    sct: np.ndarray,
    mask: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    calibration: Calibration | None = None,
    beams: tuple[float, ...] = DEFAULT_BEAMS,
    bone_hu: tuple[float, ...] = DEFAULT_BONE_HU,
    maps: dict[float, np.ndarray] | None = None,
) -> dict[str, float]:
    """WEPL, RED and bone-overlap scores of sct against ct inside mask (arrays z, y, x, in HU).

    maps, when a dict is given, receives the WEPL difference (sCT - CT, mm) per beam for pictures.
    """
    calibration = calibration or load_calibration()
    body = mask > 0
    if not body.any():
        raise ValueError("dosimetry: the body mask is empty")
    ct_hu = np.where(body, ct.astype(np.float32), np.float32(AIR_HU))
    sct_hu = np.where(body, sct.astype(np.float32), np.float32(AIR_HU))
    scores: dict[str, float] = {}
    per_beam = {key: [] for key in ("wepl_mae_mm", "wepl_p95_mm", "range_error_pct")}
    rsp_ct, rsp_sct = calibration.to_rsp(ct_hu), calibration.to_rsp(sct_hu)
    for angle in beams:
        wepl_ct = wepl_map(rsp_ct, spacing_zyx, angle)
        difference = wepl_map(rsp_sct, spacing_zyx, angle) - wepl_ct
        if maps is not None:
            maps[angle] = np.where(body, difference, np.float32(0))
        absolute = np.abs(difference[body])
        deep = body & (wepl_ct >= MIN_DEPTH_MM)
        tag = f"{angle:g}deg"
        values = {
            "wepl_mae_mm": float(absolute.mean()),
            "wepl_p95_mm": float(np.percentile(absolute, 95)),
            "range_error_pct": float(100.0 * np.mean(np.abs(difference[deep]) / wepl_ct[deep]))
            if deep.any()
            else float("nan"),
        }
        for key, value in values.items():
            scores[f"{key}_{tag}"] = value
            per_beam[key].append(value)
    for key, values in per_beam.items():
        scores[key] = float(np.mean(values))
    red_error = calibration.to_red(sct_hu[body]) - calibration.to_red(ct_hu[body])
    scores["red_mae"] = float(np.abs(red_error).mean())
    scores["red_me"] = float(red_error.mean())
    for threshold in bone_hu:
        scores[f"bone_dice_{threshold:g}hu"] = _dice(body & (ct_hu > threshold), body & (sct_hu > threshold))
    return scores


def save_wepl_pictures(path: Path, case_id: str, maps: dict[float, np.ndarray], mask: np.ndarray) -> Path:
    """One panel per beam: the WEPL difference (sCT - CT, mm) on the axial slice with the most body."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(np.argmax((mask > 0).sum(axis=(1, 2))))
    limit = max(1.0, max(float(np.percentile(np.abs(m[z]), 99)) for m in maps.values()))
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3.2), squeeze=False)
    for ax, (angle, difference) in zip(axes[0], maps.items()):
        shown = ax.imshow(difference[z], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"{case_id} beam {angle:g} deg", fontsize=8)
        ax.axis("off")
    fig.colorbar(shown, ax=axes[0].tolist(), shrink=0.8, label="WEPL sCT - CT (mm)")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
