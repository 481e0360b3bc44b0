"""The model kinds behind one interface: MR slice stacks in, CT slices in the normalised [-1, 1] space out.

Every generator is built once per run (ONNX sessions load once) and then called per batch. Noise is drawn per
slice from that slice's own seed, so the output does not depend on the batch size or on which other slices
share the batch: the same input always gives the same output.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from engine.base import Generator, GeneratorError, slice_noise  # noqa: F401  (re-exported)
from engine.ensemble import EnsembleGenerator, FlipGenerator
from engine.ldm_sampler import LatentDiffusionGenerator
from engine.runtime import create_session, session_device
from modelspec import ModelSpec, hu_to_normalised

LOG = logging.getLogger(__name__)


class WaterGenerator:
    """The template's placeholder made honest: 0 HU everywhere (the pipeline fills outside the body).

    It is the floor every trained model must beat and the shipped default until trained weights land.
    """

    def __init__(self, spec: ModelSpec, device: str = "cpu") -> None:
        self.spec = spec
        self.device = "cpu"
        self._value = float(hu_to_normalised(0.0, spec.ct_window_hu))

    def predict(self, stacks: np.ndarray, slice_seeds: np.ndarray) -> np.ndarray:
        batch, _, height, width = stacks.shape
        return np.full((batch, 1, height, width), self._value, dtype=np.float32)


class OnnxSliceGenerator:
    """A one-step conditional generator exported to ONNX (the drifting generator).

    Contract of the ONNX file: input `mr` float32[B, C, H, W] with C = context_slices, optional input `noise`
    float32[B, Z, H, W] (standard normal), output float32[B, 1, H, W] in [-1, 1].
    """

    def __init__(self, spec: ModelSpec, device: str = "auto") -> None:
        self.spec = spec
        self.session = create_session(spec.file("generator"), device)
        self.device = session_device(self.session)
        inputs = {item.name: item for item in self.session.get_inputs()}
        if "mr" not in inputs:
            raise GeneratorError(f"{spec.file('generator')}: ONNX model has no input named 'mr' (has {list(inputs)})")
        channels = inputs["mr"].shape[1]
        if isinstance(channels, int) and channels != spec.context_slices:
            raise GeneratorError(
                f"{spec.file('generator')}: model reads {channels} slices but the manifest says "
                f"context_slices={spec.context_slices}"
            )
        self.noise_channels = 0
        if "noise" in inputs:
            declared = inputs["noise"].shape[1]
            self.noise_channels = declared if isinstance(declared, int) else int(spec.sampler.get("noise_channels", 1))
        self.output_name = self.session.get_outputs()[0].name

    def predict(self, stacks: np.ndarray, slice_seeds: np.ndarray) -> np.ndarray:
        feeds = {"mr": np.ascontiguousarray(stacks, dtype=np.float32)}
        batch, _, height, width = stacks.shape
        if self.noise_channels:
            feeds["noise"] = slice_noise(slice_seeds, self.noise_channels, height, width)
        try:
            (output,) = self.session.run([self.output_name], feeds)
        except Exception as err:  # onnxruntime raises its own exception types
            raise GeneratorError(
                f"{self.spec.file('generator')}: inference failed: {str(err).splitlines()[0]}"
            ) from err
        if output.shape != (batch, 1, height, width):
            raise GeneratorError(
                f"{self.spec.file('generator')}: output shape {output.shape} != expected {(batch, 1, height, width)}"
            )
        return output.astype(np.float32, copy=False)


def load_generator(spec: ModelSpec, device: str = "auto") -> Generator:
    """Verify the model's files (an ensemble's: every member's), then build its generator.

    Raises ManifestError/GeneratorError/DeviceError."""
    spec.verify_files()
    return _build(spec, device)


def _build(spec: ModelSpec, device: str) -> Generator:
    """The generator of a verified spec, wrapped for flip test-time augmentation when the entry asks for it."""
    generator = _build_kind(spec, device)
    return FlipGenerator(generator) if spec.flip_tta else generator


def _build_kind(spec: ModelSpec, device: str) -> Generator:
    if spec.kind == "ensemble":
        # the ensemble's sampler (its own, or its region's, e.g. ddim_steps) applies to every member
        members = [_build(dataclasses.replace(m, sampler={**m.sampler, **spec.sampler}), device) for m in spec.members]
        return EnsembleGenerator(spec, members)
    if spec.kind == "water":
        return WaterGenerator(spec, device)
    if spec.kind == "drifting":
        return OnnxSliceGenerator(spec, device)
    if spec.kind == "ldm":
        return LatentDiffusionGenerator(spec, device)
    raise GeneratorError(f"model {spec.name!r}: no generator for kind {spec.kind!r}")


def auto_batch_size(spec: ModelSpec, device: str, slice_pixels: int) -> int:
    """A batch size that keeps activations modest: about 64 Mpixel-channels on a GPU, 4 Mpixel on the CPU.

    The 4 GB container limit is the binding constraint on the CPU path; a T4 has 16 GB on the GPU path.
    """
    if spec.kind == "water":
        return 64
    budget = 64_000_000 if device == "cuda" else 4_000_000
    batch = int(max(1, min(64, budget // max(1, slice_pixels * 16))))
    # flip test-time augmentation runs the stacks and their mirror images in one call: twice the batch
    return max(1, batch // 2) if spec.flip_tta else batch
