"""The latent-diffusion fallback at inference: three ONNX files and a deterministic DDIM loop in NumPy.

The noise schedule lives here, in NumPy, and the trainer imports it (`training/ldm.py`): training and sampling
cannot disagree on it, and the container needs no torch.

ONNX contracts (what `training/ldm.py` exports):
- encoder:  `mr` float32[B, C, H, W] (the normalised 2.5D MR stack) -> `cond` float32[B, K, H/f, W/f], the
  condition at latent size (a plain average pooling of the stack, or a learned encoder);
- denoiser: `x` float32[B, L, h, w] (noisy scaled latent), `t` int64[B] (training timestep), `cond` ->
  the predicted noise (output named `eps`) or velocity (output named `v`): the output name says which;
- decoder:  `z` float32[B, L, h, w] (unscaled latent) -> `ct` float32[B, 1, H, W] in the normalised CT space;
- ct_encoder (optional, never loaded here): `ct` -> latent mean `z`, for measuring the autoencoder's
  reconstruction error (benchmarks/bench_ldm.py).

The sampler settings come from the manifest entry's `sampler`: `ddim_steps` (default 20), `train_timesteps`
(default 1000) and `latent_scale` (the factor that gave the latents unit variance in training).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from engine.base import GeneratorError, slice_noise
from engine.runtime import create_session, session_device
from modelspec import ModelSpec

LOG = logging.getLogger(__name__)

#: The DDPM noise schedule shared by training and sampling: "scaled linear" betas (linear in sqrt(beta)), as in
#: latent diffusion; MONAI calls it `scaled_linear_beta` with these two ends.
BETA_START = 0.0015
BETA_END = 0.0195
DEFAULT_TRAIN_TIMESTEPS = 1000
DEFAULT_DDIM_STEPS = 20
PREDICTIONS = ("eps", "v")

DenoiseFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def alphas_cumprod(train_timesteps: int = DEFAULT_TRAIN_TIMESTEPS) -> np.ndarray:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s) for t = 0 .. T-1 (float64)."""
    if train_timesteps < 1:
        raise ValueError(f"train_timesteps must be >= 1, got {train_timesteps}")
    betas = np.linspace(BETA_START**0.5, BETA_END**0.5, train_timesteps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def ddim_timesteps(train_timesteps: int, steps: int) -> np.ndarray:
    """The N timesteps DDIM visits, from T-1 down to 0, evenly spaced and rounded (int64).

    Starting at T-1 (not at T - T/N as the original 'leading' spacing does) makes the first step start from the
    pure-noise end of the schedule that training saw; each step then goes to the next timestep of this list.
    """
    if not 1 <= steps <= train_timesteps:
        raise ValueError(f"ddim_steps must be in [1, {train_timesteps}], got {steps}")
    if steps == 1:
        return np.array([train_timesteps - 1], dtype=np.int64)
    return np.round(np.linspace(train_timesteps - 1, 0, steps)).astype(np.int64)


def predicted_x0_and_eps(
    x_t: np.ndarray, output: np.ndarray, alpha_bar: float, prediction: str
) -> tuple[np.ndarray, np.ndarray]:
    """The clean sample and the noise implied by a network output at noise level alpha_bar."""
    a, s = np.float32(np.sqrt(alpha_bar)), np.float32(np.sqrt(1.0 - alpha_bar))
    if prediction == "eps":
        return (x_t - s * output) / a, output
    if prediction == "v":  # v = a * eps - s * x0
        return a * x_t - s * output, a * output + s * x_t
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def ddim_step(
    x_t: np.ndarray, output: np.ndarray, alpha_bar: float, alpha_bar_prev: float, prediction: str
) -> tuple[np.ndarray, np.ndarray]:
    """One deterministic DDIM step (eta = 0): x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps; returns (x_prev, x0).

    No clipping of x0: latents are not bounded to [-1, 1].
    """
    x0, eps = predicted_x0_and_eps(x_t, output, alpha_bar, prediction)
    x_prev = np.float32(np.sqrt(alpha_bar_prev)) * x0 + np.float32(np.sqrt(1.0 - alpha_bar_prev)) * eps
    return x_prev.astype(np.float32, copy=False), x0


def ddim_sample(
    denoise: DenoiseFn,
    x_start: np.ndarray,
    alpha_bars: np.ndarray,
    timesteps: np.ndarray,
    prediction: str,
) -> np.ndarray:
    """Run DDIM from pure noise `x_start` through `timesteps` (descending); `denoise(x, t[B])` is the network.

    After the last timestep the previous alpha_bar is 1, so the result is that step's clean-sample estimate.
    """
    x = np.asarray(x_start, dtype=np.float32)
    batch = x.shape[0]
    for index, t in enumerate(timesteps):
        prev = alpha_bars[timesteps[index + 1]] if index + 1 < len(timesteps) else 1.0
        output = denoise(x, np.full(batch, int(t), dtype=np.int64))
        x, _ = ddim_step(x, output, float(alpha_bars[t]), float(prev), prediction)
    return x


class LatentDiffusionGenerator:
    """The `ldm` model kind: MR stack -> condition -> DDIM in latent space -> decoded CT slice in [-1, 1]."""

    def __init__(self, spec: ModelSpec, device: str = "auto") -> None:
        self.spec = spec
        self.encoder = create_session(spec.file("encoder"), device)
        self.denoiser = create_session(spec.file("denoiser"), device)
        self.decoder = create_session(spec.file("decoder"), device)
        self.device = session_device(self.denoiser)
        sampler = spec.sampler
        self.train_timesteps = int(sampler.get("train_timesteps", DEFAULT_TRAIN_TIMESTEPS))
        self.steps = int(sampler.get("ddim_steps", DEFAULT_DDIM_STEPS))
        self.latent_scale = float(sampler.get("latent_scale", 1.0))
        if not self.latent_scale > 0:
            raise GeneratorError(f"model {spec.name!r}: sampler.latent_scale must be positive, got {self.latent_scale}")
        try:
            self.alpha_bars = alphas_cumprod(self.train_timesteps)
            self.timesteps = ddim_timesteps(self.train_timesteps, self.steps)
        except ValueError as err:
            raise GeneratorError(f"model {spec.name!r}: {err}") from err

        encoder_inputs = {item.name: item for item in self.encoder.get_inputs()}
        if "mr" not in encoder_inputs:
            raise GeneratorError(f"{spec.file('encoder')}: ONNX encoder has no input 'mr' (has {list(encoder_inputs)})")
        channels = encoder_inputs["mr"].shape[1]
        if isinstance(channels, int) and channels != spec.context_slices:
            raise GeneratorError(
                f"{spec.file('encoder')}: encoder reads {channels} slices but the manifest says "
                f"context_slices={spec.context_slices}"
            )
        denoiser_inputs = {item.name: item for item in self.denoiser.get_inputs()}
        if set(denoiser_inputs) != {"x", "t", "cond"}:
            raise GeneratorError(
                f"{spec.file('denoiser')}: ONNX denoiser inputs must be x, t, cond (has {sorted(denoiser_inputs)})"
            )
        latent_channels = denoiser_inputs["x"].shape[1]
        if not isinstance(latent_channels, int):
            raise GeneratorError(f"{spec.file('denoiser')}: the latent channel count of input 'x' must be fixed")
        self.latent_channels = latent_channels
        self.prediction = self.denoiser.get_outputs()[0].name
        if self.prediction not in PREDICTIONS:
            raise GeneratorError(
                f"{spec.file('denoiser')}: denoiser output must be named 'eps' or 'v' "
                f"(what it predicts), got {self.prediction!r}"
            )
        LOG.debug(
            "ldm %r: %d DDIM steps over %d, %s-prediction, latent scale %.4g",
            spec.name,
            self.steps,
            self.train_timesteps,
            self.prediction,
            self.latent_scale,
        )

    def _run(self, session, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            (output,) = session.run(None, feeds)
        except Exception as err:  # onnxruntime raises its own exception types
            raise GeneratorError(f"{self.spec.file(name)}: inference failed: {str(err).splitlines()[0]}") from err
        return output

    def _bound_denoiser(self, cond: np.ndarray):
        """The denoiser as a function of (x, t), with the condition placed on the session's device once.

        The condition is the largest input of every DDIM step (the encoder's feature map); IO binding uploads it
        once per batch instead of once per step. The small latent and timestep go up and the prediction comes
        back each step, because the DDIM update runs in NumPy. On the CPU the binding copies nothing either.
        """
        binding = self.denoiser.io_binding()
        device_id = int(os.environ.get("SCT_CUDA_DEVICE", "0") or 0) if self.device == "cuda" else 0
        cond_value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(cond), self.device, device_id)
        binding.bind_ortvalue_input("cond", cond_value)

        def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            binding.bind_cpu_input("x", np.ascontiguousarray(x))
            binding.bind_cpu_input("t", t)
            binding.bind_output(self.prediction, "cpu")
            try:
                self.denoiser.run_with_iobinding(binding)
            except Exception as err:  # onnxruntime raises its own exception types
                raise GeneratorError(
                    f"{self.spec.file('denoiser')}: inference failed: {str(err).splitlines()[0]}"
                ) from err
            return binding.copy_outputs_to_cpu()[0]

        return denoise

    def predict(self, stacks: np.ndarray, slice_seeds: np.ndarray) -> np.ndarray:
        """float32[B, C, H, W] MR stacks -> float32[B, 1, H, W] CT in [-1, 1]; the same seeds give the same slices."""
        batch, _, height, width = stacks.shape
        cond = self._run(self.encoder, "encoder", {"mr": np.ascontiguousarray(stacks, dtype=np.float32)})
        factor = height // cond.shape[2] if cond.ndim == 4 and cond.shape[2] else 0
        if (
            cond.ndim != 4
            or cond.shape[0] != batch
            or factor < 1
            or cond.shape[2:] != (height // factor, width // factor)
            or height % factor
            or width % factor
        ):
            raise GeneratorError(
                f"{self.spec.file('encoder')}: condition shape {cond.shape} does not fit slices of {height} x {width}"
            )
        latent_hw = cond.shape[2:]
        noise = slice_noise(slice_seeds, self.latent_channels, *latent_hw)

        denoise = self._bound_denoiser(cond)

        latent = ddim_sample(denoise, noise, self.alpha_bars, self.timesteps, self.prediction)
        latent /= np.float32(self.latent_scale)
        ct = self._run(self.decoder, "decoder", {"z": latent})
        if ct.shape != (batch, 1, height, width):
            raise GeneratorError(
                f"{self.spec.file('decoder')}: output shape {ct.shape} != expected {(batch, 1, height, width)}"
            )
        # The decoder is not bounded; the normalised CT space is [-1, 1] (NaN stays NaN for the sanity check).
        return np.clip(ct, -1.0, 1.0).astype(np.float32, copy=False)
