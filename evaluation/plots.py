"""Pictures of an evaluation: a montage per case and box plots of each metric per region (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CT_WINDOW = (-1000.0, 1500.0)  # HU shown from black to white: air to dense bone
ERROR_MAX_HU = 500.0
_LABELS = {"mae": "MAE (HU)", "psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "dice": "Dice", "hd95": "HD95 (mm)"}


def _title(case_id: str, region: str, scores: dict[str, float]) -> str:
    parts = [f"{case_id} ({region})"]
    if "mae" in scores:
        parts.append(f"MAE {scores['mae']:.1f} HU")
    if "psnr" in scores:
        parts.append("PSNR inf" if math.isinf(scores["psnr"]) else f"PSNR {scores['psnr']:.2f} dB")
    if "ms_ssim" in scores:
        parts.append(f"MS-SSIM {scores['ms_ssim']:.4f}")
    if "dice" in scores:
        parts.append(f"Dice {scores['dice']:.3f}  HD95 {scores['hd95']:.1f} mm")
    return "   ".join(parts)


def _centre(mask: np.ndarray) -> tuple[int, int]:
    """(z, y) through the middle of the body mask, falling back to the middle of the volume."""
    if mask.any():
        zs, ys, _ = np.nonzero(mask)
        return int(np.median(zs)), int(np.median(ys))
    return mask.shape[0] // 2, mask.shape[1] // 2


def _mr_window(mr: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    values = mr[mask] if mask.any() else mr.ravel()
    lo, hi = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    return float(lo), float(hi if hi > lo else lo + 1)


def save_case_montage(
    path: Path,
    case_id: str,
    region: str,
    ct: np.ndarray,
    sct: np.ndarray,
    mask: np.ndarray,
    scores: dict[str, float],
    spacing_zyx: tuple[float, float, float],
    mr: np.ndarray | None = None,
) -> None:
    """MR (when given), sCT, CT and |sCT - CT| inside the mask; middle axial slice above, coronal below."""
    inside = mask > 0
    error = np.where(inside, np.abs(sct.astype(np.float32) - ct.astype(np.float32)), 0.0)
    panels = [
        ("sCT", sct, "gray", CT_WINDOW),
        ("CT", ct, "gray", CT_WINDOW),
        ("|sCT - CT| in mask (HU)", error, "magma", (0.0, ERROR_MAX_HU)),
    ]
    if mr is not None:
        panels.insert(0, ("MR", mr, "gray", _mr_window(mr, inside)))
    z, y = _centre(inside)
    sz, sy, sx = spacing_zyx
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 6.4), squeeze=False, layout="constrained")
    for col, (name, vol, cmap, (vmin, vmax)) in enumerate(panels):
        ax = axes[0, col]
        im = ax.imshow(vol[z], cmap=cmap, vmin=vmin, vmax=vmax, aspect=sy / sx, interpolation="nearest")
        ax.set_title(f"{name}, axial {z}", fontsize=9)
        ax = axes[1, col]
        ax.imshow(
            vol[:, y, :], cmap=cmap, vmin=vmin, vmax=vmax, aspect=sz / sx, origin="lower", interpolation="nearest"
        )
        ax.set_title(f"coronal {y}", fontsize=9)
        if cmap == "magma":
            fig.colorbar(im, ax=axes[:, col].tolist(), shrink=0.5, label="HU")
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(_title(case_id, region, scores), fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_boxplots(path: Path, results: list[dict], metrics: list[str]) -> None:
    """One panel per metric, one box per region (finite values; every case drawn as a dot)."""
    regions = sorted({r["region"] for r in results})
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.8), squeeze=False)
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, metric in zip(axes[0], metrics):
        data = [
            [
                r[metric]
                for r in results
                if r["region"] == reg and r.get(metric) is not None and math.isfinite(r[metric])
            ]
            for reg in regions
        ]
        positions = [i + 1 for i, d in enumerate(data) if d]
        ax.boxplot([d for d in data if d], positions=positions, widths=0.5, showfliers=False)
        for pos, d in zip(positions, [d for d in data if d]):
            ax.plot(pos + rng.uniform(-0.12, 0.12, len(d)), d, "o", ms=3, alpha=0.6, color="C0")
        ax.set_xticks(range(1, len(regions) + 1), [f"{reg}\n(n={len(d)})" for reg, d in zip(regions, data)])
        ax.set_title(_LABELS.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
