"""MR intensity normalisation inside the body mask, as the manifest's `mr_normalisation` says.

Shared by inference and training (the trainer imports this function), so both see identical inputs.
"""

from __future__ import annotations

import numpy as np

from modelspec import Normalisation


def normalise_mr(volume: np.ndarray, mask: np.ndarray, settings: Normalisation) -> np.ndarray:
    """Clip to in-mask percentiles, then z-score (or map to [-1, 1]); outside the mask -> outside_value.

    Works in place on a float32 array (the largest cases are 300 MB) and returns it.
    """
    inside = mask.astype(bool, copy=False)
    values = volume[inside]
    if values.size == 0:
        raise ValueError("normalise_mr needs a non-empty mask")
    low, high = np.percentile(values, settings.clip_percentiles, overwrite_input=True)
    np.clip(volume, low, high, out=volume)
    if settings.method == "zscore":
        values = volume[inside]
        mean = float(values.mean(dtype=np.float64))
        std = float(values.std(dtype=np.float64))
        del values
        volume -= np.float32(mean)
        volume /= np.float32(std if std > 1e-6 else 1.0)
    else:  # minmax: the clip percentiles land on -1 and 1
        del values
        span = float(high - low) if high > low else 1.0
        volume -= np.float32(low)
        volume *= np.float32(2.0 / span)
        volume -= np.float32(1.0)
    volume[~inside] = np.float32(settings.outside_value)
    return volume
