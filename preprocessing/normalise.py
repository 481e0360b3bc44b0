"""MR intensity normalisation inside the body mask, as the manifest's `mr_normalisation` says.

Shared by inference and training (the trainer imports this function), so both see identical inputs.
"""

from __future__ import annotations

import numpy as np

from modelspec import Normalisation


def standardise_histogram(volume: np.ndarray, values: np.ndarray, landmarks: tuple[tuple[float, float], ...]) -> None:
    """Map the in-mask percentiles of `values` onto the landmark values, piecewise linearly, in place on `volume`.

    Beyond the end landmarks the values clamp (the clip that follows would cut them anyway). Tied percentiles (a
    flat histogram, e.g. much air inside the mask) are spread by a hair so the mapping stays a function. Slice by
    slice, so the float64 temporaries of np.interp stay small on 300 MB volumes.
    """
    percentiles = [p for p, _ in landmarks]
    targets = np.asarray([v for _, v in landmarks], dtype=np.float64)
    sources = np.percentile(values, percentiles).astype(np.float64)
    hair = max(1e-6, 1e-9 * float(np.abs(sources).max()))
    for index in range(1, sources.size):
        sources[index] = max(sources[index], sources[index - 1] + hair)
    for index in range(volume.shape[0]):
        volume[index] = np.interp(volume[index], sources, targets)


def normalise_mr(volume: np.ndarray, mask: np.ndarray, settings: Normalisation) -> np.ndarray:
    """Standardise the histogram (when landmarks are set), clip to in-mask percentiles, then z-score (or map to
    [-1, 1]); outside the mask -> outside_value.

    Works in place on a float32 array (the largest cases are 300 MB) and returns it.
    """
    inside = mask.astype(bool, copy=False)
    values = volume[inside]
    if values.size == 0:
        raise ValueError("normalise_mr needs a non-empty mask")
    if settings.landmarks:
        standardise_histogram(volume, values, settings.landmarks)
        values = volume[inside]
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
