"""Fit the histogram-standardisation landmarks of `mr_normalisation` on a training set, as a config fragment.

    python -m training.landmarks --data data/phantoms_var3_hn --regions HN --out configs/landmarks/hn_var3.toml
    python -m training.train --config configs/drifting.toml --config configs/landmarks/hn_var3.toml ...

Nyul and Udupa's method (TorchIO's HistogramStandardization does the same): each training case's in-mask MR
percentiles at fixed levels are mapped linearly onto 0..100 (the first level to 0, the last to 100) and averaged
over the cases; those averages are the standard scale. At training and inference `normalise_mr` maps every MR's
own percentiles onto it before the clip and z-score, so an MR whose contrast or averaging differs from the
phantoms' (the real-MR check's averaged head) reaches the network with the training set's histogram. Only training
cases of the split are read: validation and test cases must not shape the model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from training.dataset import find_cases
from training.splits import load_split

LOG = logging.getLogger("training.landmarks")

#: The in-mask percentile levels: the clip levels at the ends, denser where the phantoms' air and bone sit.
LEVELS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 98.0, 99.5)
SCALE = (0.0, 100.0)


def case_landmarks(mr: np.ndarray, mask: np.ndarray, levels: tuple[float, ...] = LEVELS) -> np.ndarray:
    """One case's in-mask percentiles at `levels`, mapped linearly so the first lands on 0 and the last on 100."""
    values = mr[mask.astype(bool)]
    if values.size == 0:
        raise ValueError("empty mask")
    found = np.percentile(values.astype(np.float64), levels)
    span = found[-1] - found[0]
    if span <= 0:
        raise ValueError("the MR is constant inside the mask")
    return SCALE[0] + (found - found[0]) / span * (SCALE[1] - SCALE[0])


def fit_landmarks(
    cases: Iterable[tuple[np.ndarray, np.ndarray]], levels: tuple[float, ...] = LEVELS
) -> list[list[float]]:
    """[percentile, value] pairs: the mean of the cases' mapped percentiles, made strictly increasing.

    `cases` may be a generator: each case is reduced to its landmarks as it comes, so a release of 300 MB volumes
    never sits in memory at once.
    """
    per_case = [case_landmarks(mr, mask, levels) for mr, mask in cases]
    if not per_case:
        raise ValueError("no case to fit landmarks on")
    mean = np.mean(per_case, axis=0)
    for index in range(1, mean.size):  # ties (a flat histogram in every case) would make the mapping many-to-one
        mean[index] = max(mean[index], mean[index - 1] + 1e-3)
    return [[float(level), round(float(value), 4)] for level, value in zip(levels, mean)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="phantom or released data root (Task1/<REGION>/<ID>)")
    parser.add_argument("--split", type=Path, default=Path("configs/splits/phantoms_final.json"),
                        help="split file: only its train cases are read")  # fmt: skip
    parser.add_argument("--regions", default="HN", help="comma-separated regions")
    parser.add_argument("--out", type=Path, required=True, help="TOML config fragment to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    found = find_cases(args.data, [r for r in args.regions.split(",") if r])
    train = load_split(args.split).select(found, "train")
    if not train:
        parser.error(f"{args.data}: no training case of {args.split} found")

    def arrays() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for case_dir, _ in train:
            mr = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "mr.mha")))
            yield mr, sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "mask.mha"))) > 0

    pairs = fit_landmarks(arrays())
    text = (
        f"# Histogram-standardisation landmarks fitted on the {len(train)} training cases of {args.data}\n"
        f"# ({args.split}, regions {args.regions}) by: python -m training.landmarks "
        f"--data {args.data} --regions {args.regions} --out {args.out}\n"
        "[settings.mr_normalisation]\n"
        "landmarks = [" + ", ".join(f"[{p:g}, {v:g}]" for p, v in pairs) + "]\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    LOG.info("%d training cases -> %s", len(train), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
