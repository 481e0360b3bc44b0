"""Several predictions of one slice stack, averaged: model ensembles and left-right flip test-time augmentation.

Both are wrappers around generators of any kind, built by `engine.kinds.load_generator`:

- `EnsembleGenerator` runs every member (for example the five fold models of a cross-validation, or models
  trained on different region groups) on the same normalised slice stacks and averages their outputs. The
  preprocessing runs once; the model time grows with the number of members.
- `FlipGenerator` runs its model once on a batch that holds the stacks and their left-right mirror images (one
  call, twice the batch), mirrors the second half back and averages. Mirroring is exact (no interpolation), so
  a model that is itself mirror-symmetric gives exactly its plain output.

Each exposes `predict_views`, the individual predictions before averaging, so `--samples` can report the spread
across members and mirror views as the uncertainty map. The average is taken in the network's [-1, 1] space,
which maps linearly to HU, so it equals the average in HU.
"""

from __future__ import annotations

import numpy as np

from engine.base import Generator, GeneratorError
from modelspec import ModelSpec

#: The array axis of a model-space slice stack [B, C, H, W] that runs left-right: volumes are brought to the
#: canonical orientation (identity direction, preprocessing/orientation.py), where x (the last axis) is L-R.
LEFT_RIGHT_AXIS = -1


def predict_views(generator: Generator, stacks: np.ndarray, slice_seeds: np.ndarray) -> list[np.ndarray]:
    """The generator's individual predictions of `stacks` (one for a plain model), each float32[B, 1, H, W]."""
    views = getattr(generator, "predict_views", None)
    return views(stacks, slice_seeds) if views is not None else [generator.predict(stacks, slice_seeds)]


def view_count(generator: Generator) -> int:
    """How many predictions `predict_views` returns per slice (1 for a plain model)."""
    return int(getattr(generator, "views", 1))


def _mean(views: list[np.ndarray]) -> np.ndarray:
    total = views[0].astype(np.float32, copy=True)
    for view in views[1:]:
        total += view
    total /= len(views)
    return total


class EnsembleGenerator:
    """The mean of its members' predictions (each member a loaded generator, any kind, flip-augmented or not)."""

    def __init__(self, spec: ModelSpec, members: list[Generator]) -> None:
        if len(members) < 2:
            raise GeneratorError(f"model {spec.name!r}: an ensemble needs at least two members, got {len(members)}")
        self.spec = spec
        self.members = members
        devices = sorted({member.device for member in members})
        self.device = devices[0] if len(devices) == 1 else "+".join(devices)
        self.views = sum(view_count(member) for member in members)

    def predict_views(self, stacks: np.ndarray, slice_seeds: np.ndarray) -> list[np.ndarray]:
        views: list[np.ndarray] = []
        for member in self.members:
            views.extend(predict_views(member, stacks, slice_seeds))
        return views

    def predict(self, stacks: np.ndarray, slice_seeds: np.ndarray) -> np.ndarray:
        return _mean(self.predict_views(stacks, slice_seeds))


class FlipGenerator:
    """Left-right flip test-time augmentation around one generator: mean of f(x) and mirror(f(mirror(x)))."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.device = inner.device
        self.views = 2 * view_count(inner)

    def predict_views(self, stacks: np.ndarray, slice_seeds: np.ndarray) -> list[np.ndarray]:
        batch = len(stacks)
        both = np.concatenate([stacks, np.flip(stacks, LEFT_RIGHT_AXIS)])
        seeds = np.concatenate([slice_seeds, slice_seeds])  # the mirrored slice draws the same noise as its original
        views: list[np.ndarray] = []
        for predicted in predict_views(self.inner, both, seeds):
            views.append(predicted[:batch])
            views.append(np.ascontiguousarray(np.flip(predicted[batch:], LEFT_RIGHT_AXIS)))
        return views

    def predict(self, stacks: np.ndarray, slice_seeds: np.ndarray) -> np.ndarray:
        return _mean(self.predict_views(stacks, slice_seeds))
