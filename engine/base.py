"""The engine's one interface (what the pipeline needs from a model kind), its error, and per-slice noise.

Every model kind (engine/generators.py, engine/ldm_sampler.py, engine/ensemble.py; registered in engine/kinds.py)
builds on this module, and it imports none of them, so the kinds never import each other.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from modelspec import ModelSpec


class GeneratorError(RuntimeError):
    """A model failed to load or to run."""


class Generator(Protocol):
    """What the pipeline needs from a model kind."""

    spec: ModelSpec
    device: str

    def predict(self, stacks: np.ndarray, slice_seeds: np.ndarray) -> np.ndarray:
        """float32[B, C, H, W] normalised MR stacks -> float32[B, 1, H, W] CT in [-1, 1] (the spec's HU window)."""
        ...


def slice_noise(slice_seeds: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """Standard normal noise, float32[B, channels, H, W], each slice from its own seed."""
    noise = np.empty((len(slice_seeds), channels, height, width), dtype=np.float32)
    for index, seed in enumerate(slice_seeds):
        noise[index] = np.random.default_rng(int(seed)).standard_normal((channels, height, width), dtype=np.float32)
    return noise
