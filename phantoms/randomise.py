"""MR domain randomisation: random contrasts, resolutions and artefacts, so a network must read shape, not a table.

A network trained on phantoms rendered by one sequence model per centre learns a lookup from phantom intensities
to HU, which real contrast, texture and artefacts break. SynthSeg's answer (Billot et al., 2023) is to render
training MR with randomised appearance; the CT side stays physical. The same functions serve the phantom
renderer (at generation) and the trainer (on every crop, so every epoch sees new contrasts); they work on float32
(z, y, x) arrays of any size and take every random number from the generator they are given.

Levels (the switch in the CLI, the Python API and the training config):

- ``off``: nothing changes;
- ``physics``: plausible acquisitions: a stronger random bias field, gamma, resolution (in-plane blur and
  slice thickness), Gibbs ringing, motion ghosting and Rician noise on the given signal (in the phantom
  renderer the sequence parameters are also drawn from wider ranges);
- ``full``: as ``physics``, and with probability ``contrast_probability`` the signal is replaced by a random
  tissue contrast: a random mean and spread per tissue label (any order, including ones no sequence produces),
  texture inside tissues and partial volume at their borders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import fft, ndimage

from phantoms.imaging import rician

LEVELS = ("off", "physics", "full")
Labels = np.ndarray | Callable[[], np.ndarray] | None  # tissue labels, or a callable computing them on demand

# CT-number classes for data without tissue labels (the real release): bin edges in HU, inside the body.
CT_CLASS_EDGES_HU = (-900.0, -400.0, -150.0, -30.0, 80.0, 200.0, 600.0, 1200.0)


class RandomisationError(ValueError):
    """A bad randomisation setting."""


@dataclass(frozen=True)
class Randomisation:
    """What to randomise and how strongly; `probability` is the share of samples that get anything at all."""

    level: str = "off"
    probability: float = 0.8
    contrast_probability: float = 0.5  # ("full") share of randomised samples whose contrast is redrawn
    bias_log_std: tuple[float, float] = (0.0, 0.45)  # std of the log bias field, drawn per sample
    gamma_log_std: float = 0.3
    blur_px: tuple[float, float] = (0.0, 1.5)  # in-plane Gaussian sigma, per axis
    slice_blur: tuple[float, float] = (0.0, 0.6)  # Gaussian sigma across slices (thicker slices)
    noise: tuple[float, float] = (0.0, 0.08)  # Rician sigma relative to the body's mean signal
    gibbs_probability: float = 0.3
    gibbs_keep: tuple[float, float] = (0.4, 0.85)  # share of k-space kept per in-plane axis
    ghost_probability: float = 0.3
    ghost_amplitude: tuple[float, float] = (0.03, 0.2)
    texture: tuple[float, float] = (0.0, 0.15)  # ("full") relative spread inside a tissue
    partial_volume_px: tuple[float, float] = (0.3, 1.0)  # ("full") border blur of the rendered labels
    dark_bone_probability: float = 0.0  # share of randomised samples whose bone classes are darkened
    dark_bone_factor: tuple[float, float] = (0.05, 0.5)  # their signal is multiplied by a factor from this range
    bone_min_class: int = 7  # the first bone class of `ct_classes` (CT >= 200 HU)
    faint_bone_probability: float = 0.0  # share of randomised samples whose bone fades into its surroundings
    faint_bone_mix: tuple[float, float] = (0.3, 0.8)  # how far the bone signal moves to the local non-bone mean
    faint_bone_sigma_px: float = 4.0  # in-plane reach of that local mean
    kinds: tuple[str, ...] = field(default=("bias", "gamma", "resolution", "gibbs", "ghost", "noise"))

    def check(self) -> "Randomisation":
        if self.level not in LEVELS:
            raise RandomisationError(f"MR randomisation level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        for name in (
            "probability",
            "contrast_probability",
            "gibbs_probability",
            "ghost_probability",
            "dark_bone_probability",
            "faint_bone_probability",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise RandomisationError(f"{name} must be within [0, 1], got {value}")
        unknown = set(self.kinds) - {"bias", "gamma", "resolution", "gibbs", "ghost", "noise"}
        if unknown:
            raise RandomisationError(f"unknown randomisation kinds: {sorted(unknown)}")
        return self


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


@lru_cache(maxsize=64)
def _interpolation_matrix(n: int, cells: int) -> np.ndarray:
    """(n, cells) weights of a smooth (cosine-eased linear) interpolation from `cells` control points onto n."""
    position = (np.arange(n) + 0.5) / n * (cells - 1)
    left = np.clip(np.floor(position).astype(int), 0, cells - 2)
    t = position - left
    t = 0.5 - 0.5 * np.cos(np.pi * t)  # continuous slope at the control points: no visible kinks
    matrix = np.zeros((n, cells), dtype=np.float32)
    matrix[np.arange(n), left] = 1.0 - t
    matrix[np.arange(n), left + 1] = t
    return matrix


def smooth_noise(shape: tuple[int, int, int], rng: np.random.Generator, cells: tuple[int, int, int]) -> np.ndarray:
    """A smooth zero-mean, unit-variance field: coarse Gaussian noise on `cells` control points per axis,
    interpolated by three small matrix products (a ndimage spline zoom costs 30x more on a training crop)."""
    cz, cy, cx = (max(2, int(c)) for c in cells)
    coarse = rng.standard_normal((cz, cy, cx)).astype(np.float32)
    mz, my, mx = (_interpolation_matrix(int(n), c) for n, c in zip(shape, (cz, cy, cx)))
    out = coarse @ mx.T  # (cz, cy, nx)
    out = np.matmul(my, out)  # (cz, ny, nx)
    out = (mz @ out.reshape(cz, -1)).reshape(shape)
    out -= out.mean()
    std = float(out.std())
    out /= np.float32(std if std > 1e-6 else 1.0)
    return out


def random_contrast(
    labels: np.ndarray,
    rng: np.random.Generator,
    texture: tuple[float, float] = (0.0, 0.15),
    partial_volume_px: tuple[float, float] = (0.3, 1.0),
    air_label: int = 0,
) -> np.ndarray:
    """Signal in [0, ~1] from labels: a random mean and spread per label, smooth texture, blurred borders."""
    mean = rng.uniform(0.0, 1.0, 256).astype(np.float32)
    mean[air_label] = np.float32(rng.uniform(0.0, 0.05))  # air stays dark: the body mask is drawn on the MR
    spread = rng.uniform(texture[0], texture[1], 256).astype(np.float32)
    cells = (max(2, labels.shape[0] // 3), *(max(2, n // 12) for n in labels.shape[1:]))
    signal = spread[labels]  # mean x (1 + spread x texture), in place: the same floats, three fewer volumes
    signal *= smooth_noise(labels.shape, rng, cells)
    signal += np.float32(1.0)
    signal *= mean[labels]
    sigma = _uniform(rng, partial_volume_px)
    signal = ndimage.gaussian_filter(signal, (0.0, sigma, sigma), mode="nearest")
    return np.clip(signal, 0.0, None, out=signal)


def bias_field(shape: tuple[int, int, int], rng: np.random.Generator, log_std: float) -> np.ndarray:
    """A smooth multiplicative field exp(log_std x smooth noise) over a few control points per axis."""
    return np.exp(np.float32(log_std) * smooth_noise(shape, rng, (2, 4, 4))).astype(np.float32)


def gamma(signal: np.ndarray, rng: np.random.Generator, log_std: float) -> np.ndarray:
    """Contrast curve: signal^g on [0, 1] (scaled by its 99.5th percentile), g = exp(N(0, log_std))."""
    sample = signal.ravel()[:: max(1, signal.size // 8192)]  # the percentile of a strided sample: 20x cheaper
    scale = float(np.percentile(sample, 99.5)) or 1.0
    g = float(np.exp(rng.normal(0.0, log_std)))
    return (np.clip(signal / np.float32(scale), 0.0, None) ** np.float32(g) * np.float32(scale)).astype(np.float32)


def resolution(
    signal: np.ndarray, rng: np.random.Generator, blur_px: tuple[float, float], slice_blur: tuple[float, float]
) -> np.ndarray:
    """Coarser acquisition: anisotropic in-plane blur and a thicker slice profile, back on the same grid."""
    sigmas = (_uniform(rng, slice_blur) if signal.shape[0] > 1 else 0.0, _uniform(rng, blur_px), _uniform(rng, blur_px))
    return ndimage.gaussian_filter(signal, sigmas, mode="nearest").astype(np.float32)


def gibbs(signal: np.ndarray, rng: np.random.Generator, keep: tuple[float, float]) -> np.ndarray:
    """Gibbs ringing: each slice's k-space truncated to a centred band (a share `keep` of each in-plane axis).

    A box in k-space is separable, so each axis is truncated on its own with a real FFT (half the work of a
    complex 2-D transform); the result is real, negative ringing below zero is clipped like a magnitude image's.
    An axis whose length has a large prime factor (a 394-voxel crop is 2 x 197) is zero-padded to the next fast
    FFT length, with the kept band scaled to the same frequencies: 4x faster there, and the air at a crop's
    border makes the padding harmless. Power-of-two crops (the trainer's) are transformed exactly as they are.
    """
    out = np.asarray(signal, dtype=np.float32)
    for axis in (1, 2):
        n = out.shape[axis]
        padded = fft.next_fast_len(n, real=True)
        kept = max(2, int(round(n * _uniform(rng, keep))))
        spectrum = fft.rfft(out, n=padded, axis=axis)
        index = [slice(None)] * 3
        index[axis] = slice((kept // 2) * padded // n + 1, None)
        spectrum[tuple(index)] = 0
        index[axis] = slice(0, n)
        out = np.ascontiguousarray(fft.irfft(spectrum, n=padded, axis=axis)[tuple(index)], dtype=np.float32)
    return np.maximum(out, 0.0, out=out)


def ghosting(signal: np.ndarray, rng: np.random.Generator, amplitude: tuple[float, float]) -> np.ndarray:
    """Motion ghosts: every other phase-encoding line of k-space scaled by (1 - a).

    In image space that is exact without a transform: the even lines alone are the mean of the image and its
    copy shifted by half the field of view, so the result is (1 - a/2) x image - (a/2) x shifted copy (a
    ghost of opposite sign half a field away; magnitude taken, as a scanner shows it). Odd sizes shift by n // 2.
    """
    axis = 1 + int(rng.integers(2))
    a = np.float32(_uniform(rng, amplitude))
    shifted = np.roll(signal, signal.shape[axis] // 2, axis=axis)
    out = (np.float32(1.0) - a / np.float32(2.0)) * signal - (a / np.float32(2.0)) * shifted
    return np.abs(out, out=out).astype(np.float32, copy=False)


def artefacts(signal: np.ndarray, body: np.ndarray, rng: np.random.Generator, settings: Randomisation) -> np.ndarray:
    """The acquisition side ("physics"): bias, gamma, resolution, Gibbs, ghosting, noise, each kind if listed.

    Every draw is taken whether or not its kind is listed, so removing a kind changes only that kind's effect.
    """
    kinds = set(settings.kinds)
    out = np.asarray(signal, dtype=np.float32)
    streams = rng.spawn(6)
    if "bias" in kinds:
        out = out * bias_field(out.shape, streams[0], _uniform(streams[0], settings.bias_log_std))
    if "gamma" in kinds:
        out = gamma(out, streams[1], settings.gamma_log_std)
    if "resolution" in kinds:
        out = resolution(out, streams[2], settings.blur_px, settings.slice_blur)
    if "gibbs" in kinds and streams[3].random() < settings.gibbs_probability:
        out = gibbs(out, streams[3], settings.gibbs_keep)
    if "ghost" in kinds and streams[4].random() < settings.ghost_probability:
        out = ghosting(out, streams[4], settings.ghost_amplitude)
    if "noise" in kinds:
        inside = out[body] if body.any() else out
        level = float(inside.mean()) if inside.size else 1.0
        sigma = _uniform(streams[5], settings.noise) * max(level, 1e-6)
        out = rician(out, sigma, streams[5])  # the renderer's Rician noise, slab by slab
    return out


def ct_classes(ct_hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Tissue classes from CT numbers (uint8; 0 outside the body): labels for data that has none (real CT).

    Class k + 1 holds CT numbers in [edge k-1, edge k), as np.digitize gives, counted with one comparison per edge
    (8 edges: 10x cheaper than digitize's binary search on a training crop).
    """
    classes = np.ones(ct_hu.shape, dtype=np.uint8)
    for edge in CT_CLASS_EDGES_HU:
        classes += ct_hu >= np.float32(edge)
    classes[~body.astype(bool)] = 0
    return classes


def faint_bone(signal: np.ndarray, bone: np.ndarray, body: np.ndarray, mix: float, sigma_px: float) -> np.ndarray:
    """Bone signal moved a share `mix` towards the in-plane local mean of the non-bone tissue around it.

    The local mean is a normalised convolution (Gaussian of `sigma_px` over non-bone body voxels, slice by
    slice); bone too far from any tissue for it takes the body's non-bone mean. Only bone voxels change.
    """
    signal = np.asarray(signal, dtype=np.float32)
    body = body.astype(bool)
    bone = bone.astype(bool) & body
    if not bone.any():
        return signal
    tissue = body & ~bone
    sigmas = (0.0, sigma_px, sigma_px)
    weight = ndimage.gaussian_filter(tissue.astype(np.float32), sigmas, mode="nearest")[bone]
    local = ndimage.gaussian_filter(np.where(tissue, signal, 0.0), sigmas, mode="nearest")[bone] / np.maximum(
        weight, 1e-3
    )
    far = weight <= 1e-3
    if far.any():
        local[far] = signal[tissue].mean() if tissue.any() else signal[bone].mean()
    out = signal.copy()
    out[bone] += np.float32(mix) * (local - signal[bone])
    return out


def randomise_signal(
    signal: np.ndarray, labels: Labels, body: np.ndarray, rng: np.random.Generator, settings: Randomisation
) -> tuple[np.ndarray, str]:
    """A randomised version of a non-negative MR signal (z, y, x) and what was done ("", "physics", "full").

    `labels` (same shape; tissue labels or `ct_classes`) are needed only for "full" contrast redraws; a callable
    that returns them is called only then.
    """
    settings.check()
    decide = np.random.default_rng(rng.integers(2**63))
    if settings.level == "off" or decide.random() >= settings.probability:
        return np.asarray(signal, dtype=np.float32), ""
    done = "physics"
    cached: list[np.ndarray] = []

    def label_map() -> np.ndarray:
        if not cached:
            cached.append(labels() if callable(labels) else labels)
        return cached[0]

    if settings.level == "full" and labels is not None and decide.random() < settings.contrast_probability:
        signal = random_contrast(label_map(), rng, settings.texture, settings.partial_volume_px)
        done = "full"
    if settings.dark_bone_probability > 0 and labels is not None and decide.random() < settings.dark_bone_probability:
        # bone without bright marrow (red marrow, thin tables, a blurred or fat-suppressed image): bone classes
        # darkened, so a dark shell between scalp and brain must also read as bone, not only as air
        factor = np.float32(decide.uniform(*settings.dark_bone_factor))
        signal = np.where(label_map() >= settings.bone_min_class, signal * factor, signal).astype(np.float32)
    if settings.faint_bone_probability > 0 and labels is not None and decide.random() < settings.faint_bone_probability:
        # a skull with little contrast (partial volume, averaging, fatty marrow between thin tables): bone must be
        # read from where it sits between brain and scalp, not only from a dark band
        mix = float(decide.uniform(*settings.faint_bone_mix))
        signal = faint_bone(signal, label_map() >= settings.bone_min_class, body, mix, settings.faint_bone_sigma_px)
    return artefacts(signal, body.astype(bool), rng, settings), done


def randomise_normalised(
    mr: np.ndarray,
    labels: Labels,
    body: np.ndarray,
    rng: np.random.Generator,
    settings: Randomisation,
    outside_value: float = 0.0,
    keep_histogram: bool = False,
) -> tuple[np.ndarray, str]:
    """Randomise an already normalised MR crop (the trainer's), returning it normalised the same way.

    The crop is mapped to a non-negative signal (body minimum -> 0), randomised, then given back the body mean,
    standard deviation and value range the crop had, so the network's input statistics match what inference's
    whole-volume normalisation gives; outside the body stays `outside_value`. With `keep_histogram` (for models
    whose normalisation standardises the histogram) it gets back the crop's whole in-body histogram instead: the
    randomised voxels, in their new order, take the original values, as inference's standardisation would give
    an MR of that contrast.
    """
    body = body.astype(bool)
    if settings.level == "off" or not body.any():
        return mr, ""
    values = mr[body]
    mean, std = float(values.mean()), float(values.std()) or 1.0
    low, high = float(values.min()), float(values.max())
    signal = np.where(body, mr - low, 0.0).astype(np.float32)
    out, done = randomise_signal(signal, labels, body, rng, settings)
    if not done:
        return mr, ""
    inside = out[body]
    if keep_histogram:
        ranks = np.argsort(np.argsort(inside, kind="stable"), kind="stable")
        out[body] = np.sort(values)[ranks]
    else:
        new_std = float(inside.std()) or 1.0
        out = (out - np.float32(inside.mean())) * np.float32(std / new_std) + np.float32(mean)
        np.clip(out, low, high, out=out)
    out[~body] = np.float32(outside_value)
    return out.astype(np.float32), done
