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
TENSORRT = "TensorrtExecutionProvider"
#: Where TensorRT keeps its built engines between runs (building one takes minutes; a cached one loads in seconds).
DEFAULT_TRT_CACHE = Path("/tmp/sct_trt_cache")


class DeviceError(RuntimeError):
    """The requested device cannot be used."""


#: Warnings already logged by this process: an ensemble opens one session per member, and says a thing once.
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        LOG.warning("%s", message)


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


def tensorrt_provider_options(device_id: int = 0) -> dict[str, str]:
    """TensorRT execution provider options: an engine cache (SCT_TRT_CACHE, default /tmp/sct_trt_cache) and a
    timing cache, so an engine is built once per model and input-shape profile, not once per run; fp16 kernels
    when SCT_TENSORRT_FP16=1 (TensorRT then chooses per layer)."""
    cache = os.environ.get("SCT_TRT_CACHE", "").strip() or str(DEFAULT_TRT_CACHE)
    return {
        "device_id": str(device_id),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
        "trt_fp16_enable": "True" if os.environ.get("SCT_TENSORRT_FP16", "") == "1" else "False",
    }


def providers_for(device: str, available: list[str] | None = None) -> list:
    """The providers list for InferenceSession: CUDA (with its options) then the CPU, or the CPU alone.

    With SCT_TENSORRT=1 and a TensorRT-enabled onnxruntime, TensorRT goes first (layers it cannot take fall to
    CUDA, then the CPU); without TensorRT installed that is a warning and CUDA runs as usual.
    """
    available = ort.get_available_providers() if available is None else available
    if device in ("auto", "cuda") and CUDA in available:
        device_id = int(os.environ.get("SCT_CUDA_DEVICE", "0") or 0)
        providers: list = [(CUDA, cuda_provider_options(device_id)), CPU]
        if os.environ.get("SCT_TENSORRT", "") == "1":
            if TENSORRT in available:
                providers.insert(0, (TENSORRT, tensorrt_provider_options(device_id)))
            else:
                LOG.warning("SCT_TENSORRT=1 but this onnxruntime has no TensorRT execution provider: using CUDA")
        return providers
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
        _warn_once("CUDA execution provider unavailable (no GPU or CUDA/cuDNN libraries): running on the CPU")
    LOG.debug("loaded %s on %s", Path(model_path).name, used[0])
    return session


def session_device(session: ort.InferenceSession) -> str:
    """'cuda' or 'cpu': where this session runs (TensorRT runs on the CUDA device)."""
    return "cuda" if session.get_providers()[0] in (CUDA, TENSORRT) else "cpu"


def free_gpu_bytes(device_id: int | None = None) -> int | None:
    """Free memory of the CUDA device (cudaMemGetInfo through the CUDA runtime library), None when unknown.

    The container's onnxruntime-gpu ships with the CUDA runtime; no torch needed. Any failure (no library, no
    device) gives None, and the caller keeps its fixed budget."""
    import ctypes

    device_id = int(os.environ.get("SCT_CUDA_DEVICE", "0") or 0) if device_id is None else device_id
    for name in ("libcudart.so.12", "libcudart.so.11.0", "libcudart.so"):
        try:
            runtime = ctypes.CDLL(name)
        except OSError:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        try:
            if (
                runtime.cudaSetDevice(device_id) != 0
                or runtime.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0
            ):
                return None
        except AttributeError:
            return None
        return int(free.value)
    return None
