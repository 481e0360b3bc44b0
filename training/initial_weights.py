"""Start a run from trained weights (`run.init_from`): a checkpoint of this trainer or an exported ONNX generator.

Fine-tuning (for example the shipped model on MR-randomised phantoms) needs the weights, not the optimiser or
the step count, so this is separate from `--resume`. Shipped models exist only as ONNX files, so the generator's
weights are read back from the ONNX initialisers: the convolutions keep their PyTorch names; the legacy exporter
renames each GroupNorm's scale and shift (`onnx::Mul_N`, `onnx::Add_N`, in graph order), which are matched by
order and shape. Whatever the mapping, the loaded network must then reproduce the ONNX file's output on a random
input (the export's own parity rule), or the run stops.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from training.errors import TrainingError

LOG = logging.getLogger(__name__)


def onnx_state_dict(onnx_path: Path, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ONNX file's initialisers as a state dict shaped like `reference` (named ones by name, the rest in order)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    arrays = {item.name: numpy_helper.to_array(item) for item in graph.initializer}
    state: dict[str, torch.Tensor] = {}
    unnamed = [name for name in arrays if name not in reference]
    missing = [key for key in reference if key not in arrays]
    if len(unnamed) != len(missing):
        raise TrainingError(
            f"{onnx_path}: {len(arrays)} initialisers do not fit this network ({len(reference)} tensors, "
            f"{len(missing)} not found by name, {len(unnamed)} unnamed): is the model config the one it was trained with?"
        )
    renamed = dict(zip(missing, unnamed))
    for key, target in reference.items():
        array = arrays[renamed.get(key, key)]
        if array.size != target.numel():
            raise TrainingError(
                f"{onnx_path}: {key} has {array.size} values, this network needs {tuple(target.shape)}: "
                "is the model config the one it was trained with?"
            )
        state[key] = torch.from_numpy(np.ascontiguousarray(array).reshape(tuple(target.shape)).copy())
    return state


def load_initial_weights(
    model: torch.nn.Module, path: str | Path, context_slices: int, noise_channels: int, window: tuple[float, float]
) -> None:
    """Load `path` (a trainer checkpoint's EMA weights, or an exported generator .onnx) into `model`, in place."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"run.init_from: {path} is not a file")
    if path.suffix == ".pt":
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        state = checkpoint.get("ema") or checkpoint.get("model")
        if state is None:
            raise TrainingError(f"{path}: no 'ema' or 'model' weights in this checkpoint")
    elif path.suffix == ".onnx":
        state = onnx_state_dict(path, model.state_dict())
    else:
        raise TrainingError(
            f"run.init_from: {path} must be a trainer checkpoint (.pt) or an exported generator (.onnx)"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise TrainingError(f"{path}: weights do not fit this network: {str(error).splitlines()[0]}") from None
    if path.suffix == ".onnx":
        from training.networks import PARITY_TOLERANCE
        from training.onnx_parity import parity_error_hu

        was_training = model.training
        device = next(model.parameters()).device
        model.eval().cpu()
        try:
            error = parity_error_hu(model, path, context_slices, noise_channels, window)
        finally:
            model.to(device).train(was_training)
        if not error <= PARITY_TOLERANCE * (window[1] - window[0]) / 2.0:
            raise TrainingError(f"{path}: the loaded network differs from the ONNX file by {error:.3g} HU")
        LOG.info("initial weights from %s (reproduces its output to %.2e HU)", path, error)
    else:
        LOG.info("initial weights from %s", path)
