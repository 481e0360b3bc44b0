"""How far an exported ONNX generator is from its PyTorch network, in HU.

Its own module because both the exporter (training/export.py) and the initial-weights loader
(training/initial_weights.py, which training/train.py uses) need it: kept in the exporter, it closed the import
cycle export -> train -> initial_weights -> export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def parity_error_hu(
    model: torch.nn.Module,
    onnx_path: Path,
    context: int,
    noise_channels: int,
    window: tuple[float, float],
    seed: int = 0,
) -> float:
    """Largest |ONNX Runtime - PyTorch| in HU on a seeded random input of an odd batch and size."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    stride = int(getattr(model, "stride", 16))  # an odd batch and a size other than the export's 64 x 64
    height, width = (stride * -(-size // stride) for size in (96, 80))
    mr = rng.standard_normal((3, context, height, width), dtype=np.float32)
    noise = rng.standard_normal((3, noise_channels, height, width), dtype=np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(mr), torch.from_numpy(noise)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"mr": mr}
    if any(item.name == "noise" for item in session.get_inputs()):
        feeds["noise"] = noise
    (output,) = session.run(None, feeds)
    return float(np.abs(output - reference).max() * (window[1] - window[0]) / 2.0)
