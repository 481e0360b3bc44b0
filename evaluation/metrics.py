"""The SynthRAD2025 image metrics (MAE, PSNR, masked MS-SSIM), reimplemented from their published definition.

The ranked numbers are defined by the organisers' evaluation code, quirks included, so this module follows its
arithmetic step by step (see ``../shared/docs/synthrad.md``, section 3):

* both images are set to -1024 outside the body mask before anything else;
* MAE is taken over the mask on the *unclipped* sCT;
* PSNR clips both images to [-1024, 3071] and uses the fixed data range 4095;
* MS-SSIM clips, fills the outside with -1024, shifts by +1024, edge-pads every axis to 97 voxels, and then at
  each of 5 levels takes an SSIM map (7x7x7 uniform window, sample covariance 343/342, K1 0.01, K2 0.03,
  C3 = C2/2) whose three factors are all raised to the level's weight (the official luminance-exponent quirk),
  averages it over the mask after cropping 3 voxels from every face, and downsamples the images with a 2x2x2
  box (``fftconvolve(..., mode="same")[::2, ::2, ::2]``) while the mask is only strided. The result is the
  product of the per-level values, each clipped to [0, 1].

Numerical fidelity: the dtypes follow those the official code ends up with (an int16 CT becomes float64 on
clipping, a float32 sCT stays float32 through its first smoothing), because the float32 variance of a float32
sCT is part of the official number. The official code works on arrays transposed to (x, y, z); the filters are
applied here in that same axis order so that float32 rounding matches. The 2x2x2 box downsampling is computed
exactly by slicing instead of through an FFT (identical up to the FFT's ~1e-13 round-off) because it is faster.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.ndimage import uniform_filter1d

log = logging.getLogger(__name__)

# The challenge's own constants (its evaluator hard-codes them); kept here, not imported, so the evaluator stays
# a faithful copy of the official scoring. test_evaluation checks they equal the models' window in modelspec.
HU_MIN = -1024.0
HU_MAX = 3071.0
DATA_RANGE = HU_MAX - HU_MIN  # 4095
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 7
SSIM_CROP = 3
MS_SSIM_MIN_SIZE = 97
K1, K2 = 0.01, 0.03


def _validate(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> None:
    """Raise a one-line ValueError for inputs the metrics cannot be defined on."""
    if gt.ndim != 3:
        raise ValueError(f"ground truth must be a 3-D array, got shape {gt.shape}")
    if gt.shape != pred.shape or gt.shape != mask.shape:
        raise ValueError(f"shape mismatch: ground truth {gt.shape}, prediction {pred.shape}, mask {mask.shape}")
    if not np.any(mask > 0):
        raise ValueError("the body mask is empty: the metrics are undefined")


def _outside_to_air(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Set voxels outside the mask to -1024, keeping the array's dtype as NumPy's promotion rules do.

    Integer dtypes that cannot hold -1024 (unsigned, int8) are widened first; the values are unchanged.
    """
    if image.dtype.kind in "ub" or (image.dtype.kind == "i" and image.dtype.itemsize < 2):
        image = image.astype(np.int32)
    return np.where(inside, image, -1024)


def mae(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error in HU over the mask, the sCT not clipped (out-of-range values cost in full)."""
    inside = mask > 0
    diff = gt[inside].astype(np.float64) - pred[inside].astype(np.float64)
    return float(np.abs(diff).sum() / np.count_nonzero(inside))


def psnr(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB over the mask, both images clipped to [-1024, 3071], data range 4095; +inf when identical."""
    inside = mask > 0
    g = np.clip(gt[inside].astype(np.float64), HU_MIN, HU_MAX)
    p = np.clip(pred[inside].astype(np.float64), HU_MIN, HU_MAX)
    mse = np.mean((g - p) ** 2, dtype=np.float64)
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(DATA_RANGE**2 / mse))


def _uniform(image: np.ndarray) -> np.ndarray:
    """7-voxel uniform mean along every axis ('reflect' borders), last axis first.

    Equals ``scipy.ndimage.uniform_filter(image.T, 7).T`` - the official code filters (x, y, z) arrays, i.e.
    our axes in the order 2, 1, 0 - so that float32 rounding between the passes is the same.
    """
    out = uniform_filter1d(image, SSIM_WINDOW, axis=2, mode="reflect")
    out = uniform_filter1d(out, SSIM_WINDOW, axis=1, mode="reflect")
    return uniform_filter1d(out, SSIM_WINDOW, axis=0, mode="reflect")


def _masked_ssim(x: np.ndarray, y: np.ndarray, mask: np.ndarray, weight: float) -> float:
    """Mean of the weighted SSIM map over the mask, 3 voxels cropped from every face (NaN if none remain)."""
    c = SSIM_CROP
    if min(mask.shape) <= 2 * c:
        log.warning("MS-SSIM level of shape %s has no voxel left after cropping", mask.shape)
        return math.nan
    inner = (slice(c, -c),) * 3
    sel = mask[inner]
    if not sel.any():
        log.warning("MS-SSIM level of shape %s has no mask voxel left after cropping", mask.shape)
        return math.nan

    n_window = SSIM_WINDOW**3
    cov_norm = n_window / (n_window - 1)  # sample covariance, 343/342

    # The filters need the whole image; the SSIM formula is only evaluated where it is averaged.
    ux = _uniform(x)[inner][sel]
    uy = _uniform(y)[inner][sel]
    uxx = _uniform(x * x)[inner][sel]
    uyy = _uniform(y * y)[inner][sel]
    uxy = _uniform(x * y)[inner][sel]

    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    sx = np.clip(vx, 0, None) ** 0.5
    sy = np.clip(vy, 0, None) ** 0.5

    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    c3 = c2 / 2
    lum = np.clip((2 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0, None)
    con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
    struct = np.clip((vxy + c3) / (sx * sy + c3), 0, None)
    w = np.float64(weight)
    ssim_map = (lum**w) * (con**w) * (struct**w)
    return float(ssim_map.mean(dtype=np.float64))


def _box_downsample(image: np.ndarray) -> np.ndarray:
    """2x2x2 box mean evaluated at even indices, as ``fftconvolve(image, ones(2,2,2)/8, 'same')[::2,::2,::2]``.

    With an even kernel, 'same' keeps the leading part of the full convolution, so output voxel 2j averages
    input voxels 2j-1 and 2j on every axis, the voxel before the first counting as zero.
    """
    out = image.astype(np.float64)
    for axis in range(3):
        n_out = (out.shape[axis] + 1) // 2
        padded = np.concatenate(
            [np.zeros_like(out, shape=tuple(1 if a == axis else s for a, s in enumerate(out.shape))), out],
            axis=axis,
        )
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, 2 * n_out, 2)
        hi[axis] = slice(1, 2 * n_out, 2)
        out = padded[tuple(lo)] + padded[tuple(hi)]
    return out * 0.125


def _pad_to_min_size(image: np.ndarray, size: int = MS_SSIM_MIN_SIZE) -> np.ndarray:
    """Edge-pad every axis shorter than `size` to `size` voxels, the smaller half before."""
    pads = []
    for dim in image.shape:
        missing = max(size - dim, 0)
        pads.append((missing // 2, missing - missing // 2))
    if not any(before or after for before, after in pads):
        return image
    return np.pad(image, pads, mode="edge")


def ms_ssim(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> float:
    """Masked multi-scale SSIM as ranked by SynthRAD2025 (1.0 for identical images)."""
    inside = mask > 0
    x = np.clip(_outside_to_air(gt, inside), HU_MIN, HU_MAX)
    y = np.clip(_outside_to_air(pred, inside), HU_MIN, HU_MAX)
    x = np.where(inside, x, HU_MIN) - HU_MIN
    y = np.where(inside, y, HU_MIN) - HU_MIN
    x = _pad_to_min_size(x)
    y = _pad_to_min_size(y)
    m = _pad_to_min_size(inside)

    product = 1.0
    last = len(MS_SSIM_WEIGHTS) - 1
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        value = _masked_ssim(x, y, m, weight)
        product *= float(np.clip(value, 0.0, 1.0))
        if level < last:
            x, y, m = _box_downsample(x), _box_downsample(y), m[::2, ::2, ::2]
    return float(product)


def score_case(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Score one case: ``{"mae", "psnr", "ms_ssim"}`` as the official ``ImageMetrics.score_patient`` returns.

    Arrays are as SimpleITK reads them, each in its own dtype (geometry is ignored); ``psnr`` is ``inf`` for
    a perfect prediction. Raises ValueError for mismatched shapes or an empty mask.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    mask = np.asarray(mask)
    _validate(gt, pred, mask)
    inside = mask > 0
    gt_masked = _outside_to_air(gt, inside)
    pred_masked = _outside_to_air(pred, inside)
    return {
        "mae": mae(gt_masked, pred_masked, inside),
        "psnr": psnr(gt_masked, pred_masked, inside),
        "ms_ssim": ms_ssim(gt_masked, pred_masked, inside),
    }
