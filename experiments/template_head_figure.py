"""A picture of template-derived heads beside the real heads of the panel: MR (and CT where there is one).

    python experiments/template_head_figure.py --heads data/template_heads --cases 1HNT000,1HNT001,1HNT002 \
        --real runs/real_mr_panel/cases --out docs/results/template_heads/template_vs_real.png

Each column is one head at the level of the lateral ventricles (the axial slice through the middle of the brain's
height, by the CT's brain for the template heads and by the brain mask for the real ones) and a coronal plane.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")).astype(np.float32)


def _level(brain: np.ndarray, fraction: float = 0.55) -> int:
    rows = np.flatnonzero(brain.reshape(brain.shape[0], -1).any(axis=1))
    return int(rows[0] + fraction * (rows[-1] - rows[0])) if rows.size else brain.shape[0] // 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=Path, required=True, help="template heads' data folder")
    parser.add_argument("--cases", default="1HNT000,1HNT001,1HNT002")
    parser.add_argument("--real", type=Path, required=True, help="the panel's prepared heads (mean_head, itk_head)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = []
    for case in args.cases.split(","):
        folder = args.heads / "Task1" / "HN" / case
        ct = _array(folder / "ct.mha")
        brain = (ct > 15) & (ct < 60)
        columns.append((f"template {case}", _array(folder / "mr.mha"), ct, brain))
    for head in ("mean_head", "itk_head"):
        folder = args.real / head
        columns.append((f"real: {head}", _array(folder / "mr.mha"), None, _array(folder / "brain.mha") > 0))
    fig, axes = plt.subplots(3, len(columns), figsize=(3.2 * len(columns), 9.6))
    for c, (title, mr, ct, brain) in enumerate(columns):
        z = _level(brain)
        y = int(np.flatnonzero(brain.any(axis=(0, 2))).mean()) if brain.any() else mr.shape[1] // 2
        hi = float(np.percentile(mr[mr > 0], 99.5)) if (mr > 0).any() else 1.0
        axes[0, c].imshow(mr[z], cmap="gray", vmin=0, vmax=hi)
        axes[0, c].set_title(f"{title}\nMR axial", fontsize=9)
        axes[1, c].imshow(mr[::-1, y], cmap="gray", vmin=0, vmax=hi, aspect=3.0)
        axes[1, c].set_title("MR coronal", fontsize=9)
        if ct is not None:
            axes[2, c].imshow(ct[z], cmap="gray", vmin=-1000, vmax=1500)
            axes[2, c].set_title("CT axial [-1000, 1500] HU", fontsize=9)
        else:
            axes[2, c].text(0.5, 0.5, "no CT", ha="center", va="center")
        for a in axes[:, c]:
            a.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=60)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
