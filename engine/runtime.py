"""ONNX Runtime sessions, created in one place: CUDA when it really loads, the CPU otherwise."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnxruntime as ort

LOG = logging.getLogger(__name__)
# onnxruntime-gpu logs an [E:onnxruntime] line when its CUDA provider library cannot load (no GPU, no CUDA
# libraries) and then falls back; the provider actually used is checked and reported below instead.
ort.set_default_logger_severity(4)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class DeviceError(RuntimeError):
    """The requested device cannot be used."""


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # keep onnxruntime's own warnings (e.g. a failed CUDA load) out of the log
    threads = os.environ.get("SCT_THREADS")
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


def create_session(model_path: Path, device: str = "auto") -> ort.InferenceSession:
    """Load an ONNX model on `device` ('auto', 'cuda' or 'cpu').

    onnxruntime-gpu lists the CUDA provider even on machines without a GPU and then silently falls back, so
    the provider that was actually used is read back from the session, and `cuda` fails loudly if it is not it.
    """
    if device not in ("auto", "cuda", "cpu"):
        raise DeviceError(f"unknown device {device!r}; use auto, cuda or cpu")
    providers = [CPU]
    if device in ("auto", "cuda") and CUDA in ort.get_available_providers():
        providers = [CUDA, CPU]
    if device == "cuda" and CUDA not in providers:
        raise DeviceError("--device cuda: this onnxruntime build has no CUDA execution provider")
    session = ort.InferenceSession(str(model_path), sess_options=_session_options(), providers=providers)
    used = session.get_providers()
    if device == "cuda" and CUDA not in used:
        raise DeviceError("--device cuda: the CUDA execution provider failed to load (no GPU or CUDA/cuDNN libraries)")
    if CUDA in providers and CUDA not in used:
        LOG.info("CUDA execution provider unavailable (no GPU or CUDA/cuDNN libraries): running on the CPU")
    LOG.debug("loaded %s on %s", Path(model_path).name, used[0])
    return session


def session_device(session: ort.InferenceSession) -> str:
    """'cuda' or 'cpu': where this session runs."""
    return "cuda" if session.get_providers()[0] == CUDA else "cpu"
