"""The water and one-step generators behind the engine's one interface, and the batch size they run at.

MR slice stacks in, CT slices in the normalised [-1, 1] space out. Which kind an entry runs is the registry's
business (engine/kinds.py, which also builds them).

Every generator is built once per run (ONNX sessions load once) and then called per batch. Noise is drawn per
slice from that slice's own seed, so the output does not depend on the batch size or on which other slices
share the batch: the same input always gives the same output.
"""

from __future__ import annotations

import logging

import numpy as np

from engine.base import Generator, GeneratorError, slice_noise  # noqa: F401  (re-exported)
from engine.runtime import (
    MAX_BATCH,
    create_session,
    free_gpu_bytes,
    live_gpu_sessions,
    session_device,
    tensorrt_batch_limit,
)
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
    """The `one_step` kind: a conditional generator exported to ONNX (trained with the L1 or the drifting objective).

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


#: GPU memory one slice of activations takes per pixel, by the shipped networks' widths (fp32 activations that
#: are alive at once, cuDNN workspace and ONNX Runtime's arena rounding); conservative, so a batch always fits.
GPU_BYTES_PER_PIXEL = 2048
#: Share of the free GPU memory the batches may take together (the rest: the arenas' rounding, the CUDA context,
#: cuDNN's workspace, other processes). It is divided among the live GPU sessions, because every ONNX Runtime
#: session keeps its own arena at the largest size it has needed: an ensemble of three runs three arenas, and a
#: region's fallback adds its own when it loads.
GPU_MEMORY_SHARE = 0.5


def auto_batch_size(
    spec: ModelSpec,
    device: str,
    slice_pixels: int,
    free_gpu: int | None = None,
    gpu_sessions: int | None = None,
    calls: int = 1,
) -> int:
    """A batch size that keeps activations modest.

    On a GPU: GPU_MEMORY_SHARE of the free GPU memory (`free_gpu` bytes; read from the device when not given),
    shared among the live GPU sessions (`gpu_sessions`; counted by engine.runtime when not given), over
    GPU_BYTES_PER_PIXEL per pixel; when the free memory cannot be read, about 64 Mpixel-channels shared the same
    way; never more than a live TensorRT session's shape profile accepts. On the CPU about 4 Mpixel-channels shared
    among the `calls` that run at once (engine.runtime.parallel_calls): the 4 GB container limit is the binding
    constraint there, and smaller batches are no slower on the CPU (one 400 x 400 slice per call was the fastest
    per slice, benchmarks/README.md). At most MAX_BATCH (64), halved with flip_tta.
    """
    if spec.kind == "water":
        return MAX_BATCH
    limit = MAX_BATCH
    if device == "cuda":
        sessions = max(1, live_gpu_sessions() if gpu_sessions is None else gpu_sessions)
        if free_gpu is None:
            free_gpu = free_gpu_bytes()
        if free_gpu is not None:
            batch = int(GPU_MEMORY_SHARE * free_gpu // (sessions * max(1, slice_pixels * GPU_BYTES_PER_PIXEL)))
        else:
            batch = 64_000_000 // (sessions * max(1, slice_pixels * 16))
        limit = min(limit, tensorrt_batch_limit() or limit)
    else:
        batch = 4_000_000 // max(1, calls * slice_pixels * 16)
    batch = int(max(1, min(limit, batch)))
    # flip test-time augmentation runs the stacks and their mirror images in one call: twice the batch
    return max(1, batch // 2) if spec.flip_tta else batch
