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
    threads = os.environ.get("SCT_THREADS", "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise DeviceError(f"SCT_THREADS must be a positive whole number of threads, got {threads[:40]!r}")
        options.intra_op_num_threads = int(threads)
    return options


def cuda_provider_options(device_id: int = 0) -> dict[str, str]:
    """CUDA execution provider options, chosen on purpose.

    - cudnn_conv_algo_search HEURISTIC: cuDNN's own heuristic picks a convolution algorithm at once; the default
      (EXHAUSTIVE) benchmarks every algorithm again for each new input shape, and every case has its own slice size.
    - cudnn_conv_use_max_workspace 1: let the chosen algorithms use the workspace they want (faster convolutions).
    - arena_extend_strategy kSameAsRequested: grow the memory arena by what is needed, not by doubling, so a T4's
      16 GB is not reserved by one large case.
    - do_copy_in_default_stream 1: copies and kernels in one stream (no races, no extra synchronisation).
    """
    return {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "1",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": "1",
    }


def providers_for(device: str, available: list[str] | None = None) -> list:
    """The providers list for InferenceSession: CUDA (with its options) then the CPU, or the CPU alone."""
    available = ort.get_available_providers() if available is None else available
    if device in ("auto", "cuda") and CUDA in available:
        device_id = int(os.environ.get("SCT_CUDA_DEVICE", "0") or 0)
        return [(CUDA, cuda_provider_options(device_id)), CPU]
    return [CPU]


def create_session(model_path: Path, device: str = "auto") -> ort.InferenceSession:
    """Load an ONNX model on `device` ('auto', 'cuda' or 'cpu').

    onnxruntime-gpu lists the CUDA provider even on machines without a GPU and then silently falls back, so
    the provider that was actually used is read back from the session, and `cuda` fails loudly if it is not it.
    """
    if device not in ("auto", "cuda", "cpu"):
        raise DeviceError(f"unknown device {device!r}; use auto, cuda or cpu")
    providers = providers_for(device)
    if device == "cuda" and len(providers) == 1:
        raise DeviceError("--device cuda: this onnxruntime build has no CUDA execution provider")
    session = ort.InferenceSession(str(model_path), sess_options=_session_options(), providers=providers)
    used = session.get_providers()
    if device == "cuda" and CUDA not in used:
        raise DeviceError("--device cuda: the CUDA execution provider failed to load (no GPU or CUDA/cuDNN libraries)")
    if len(providers) > 1 and CUDA not in used:
        LOG.warning("CUDA execution provider unavailable (no GPU or CUDA/cuDNN libraries): running on the CPU")
    LOG.debug("loaded %s on %s", Path(model_path).name, used[0])
    return session


def session_device(session: ort.InferenceSession) -> str:
    """'cuda' or 'cpu': where this session runs."""
    return "cuda" if session.get_providers()[0] == CUDA else "cpu"
