"""ONNX Runtime sessions, created in one place: TensorRT or CUDA when they really load, the CPU otherwise.

What the first contact with a GPU needs, and where it is handled:

- A start-up line with the NVIDIA driver, the CUDA versions and the device (`gpu_environment`), read through the
  driver's own libraries with ctypes; anything absent is said, never a crash.
- The provider that really runs each session is read back. When CUDA (or TensorRT) was asked for and did not
  load, ONNX Runtime's own reason (its exception, or the error it logs while loading its provider library) is
  logged once per process with one clear "running on the CPU" line, not once per ensemble member.
- TensorRT only when its libraries load (checked with ctypes before any session is made: ONNX Runtime 1.23 falls
  back from a failed TensorRT session to the CPU alone, not to CUDA), with explicit min/opt/max shape profiles,
  so one engine serves every batch and slice size in range.
- GPU memory: every session keeps its own CUDA arena, so the live GPU sessions are counted
  (`live_gpu_sessions`) and the automatic batch is shared among them (engine/generators.auto_batch_size); the
  arenas grow by what is requested (kSameAsRequested) and SCT_GPU_MEM_LIMIT_MB caps each one.
- CPU threads on purpose: SCT_THREADS (default 1) intra-op threads per session, and as many network calls at
  once as the usable cores (affinity, cgroup quota) hold (`parallel_calls`; the pipeline runs them).
- TF32 off by default (SCT_TF32=1 turns it on), so GPU and CPU outputs agree within the container test's 1 HU.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import re
import sys
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

LOG = logging.getLogger(__name__)
# onnxruntime-gpu logs [E:onnxruntime] lines when a provider library cannot load (no GPU, no CUDA libraries) and
# then falls back; those lines are captured while a GPU session is made and reported once (see _open_session).
ort.set_default_logger_severity(4)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
#: The libraries ONNX Runtime's TensorRT provider links against (TensorRT 10); neither is in the image.
TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvonnxparser.so.10")
#: The largest automatic batch (slices per network call) on any device.
MAX_BATCH = 64
#: TensorRT shape profile defaults (SCT_TRT_MAX_BATCH, SCT_TRT_MAX_SIZE override the maxima): batch 1..8 and
#: slices of 16..640 pixels per side (a 640 mm field at 1 mm); TensorRT tunes its kernels for the opt shape.
TRT_MAX_BATCH = 8
TRT_MIN_SIZE = 16
TRT_OPT_SIZE = 384
TRT_MAX_SIZE = 640
#: The NVIDIA kernel module's version text (visible inside containers that were given a GPU).
NVIDIA_DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
#: The cgroup v2 CPU quota of this container ("max 100000" when unlimited).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


class DeviceError(RuntimeError):
    """The requested device cannot be used."""


@dataclass
class _ProcessState:
    """What is reported once per process, and the GPU sessions alive now (session -> TensorRT max batch, or 0)."""

    environment_logged: bool = False
    cuda_fallback_logged: bool = False
    tensorrt_logged: bool = False
    tensorrt_missing: str | None = None
    tensorrt_checked: bool = False
    live: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)


_STATE = _ProcessState()


def _load_library(name: str) -> ctypes.CDLL:
    """dlopen `name` (raises OSError with the loader's reason when it cannot)."""
    return ctypes.CDLL(name)


def _positive_int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise DeviceError(f"{name} must be a positive whole number, got {value[:40]!r}")
    return int(value)


def cuda_device_id() -> int:
    """The CUDA device to use: SCT_CUDA_DEVICE (default 0)."""
    value = os.environ.get("SCT_CUDA_DEVICE", "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise DeviceError(f"SCT_CUDA_DEVICE must be a device number (0, 1, ...), got {value[:40]!r}")
    return int(value)


def usable_cores() -> int:
    """The CPU cores this process may really use: its affinity mask, capped by a cgroup v2 CPU quota (cpu.max).

    ONNX Runtime's own default counts the machine's physical cores, which in a container limited to 2 CPUs on a
    64-core host means 64 threads fighting over 2 cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with contextlib.suppress(OSError, ValueError, IndexError):
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return max(1, cores)


def cpu_threads() -> int:
    """ONNX Runtime threads per network call on the CPU: SCT_THREADS, else 1 (the cores are filled with calls)."""
    value = os.environ.get("SCT_THREADS", "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise DeviceError(f"SCT_THREADS must be a positive whole number of threads, got {value[:40]!r}")
    return int(value)


def parallel_calls(device: str) -> int:
    """How many network calls run at once on `device`: on the CPU, the usable cores over SCT_THREADS; else 1.

    One call with two intra-op threads used about 1.3 of 2 cores (issue 36): a slice of the shipped networks is
    too small a job to split well between threads; one single-threaded call per core keeps every core busy while
    slices are left (benchmarks/bench_speed.py measures both: SCT_THREADS=2 is the former setting). Outputs do
    not depend on how many calls run at once (test/test_speed.py)."""
    return max(1, usable_cores() // cpu_threads()) if device == "cpu" else 1


def _session_options() -> ort.SessionOptions:
    """Set on purpose: SCT_THREADS (default 1) intra-op threads and one inter-op thread (execution stays ONNX
    Runtime's default, sequential: the networks are chains), so that parallel_calls() calls at once fill the
    cores without oversubscribing them."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # keep onnxruntime's per-session warnings (e.g. node placement) out of the log
    options.intra_op_num_threads = cpu_threads()
    options.inter_op_num_threads = 1
    return options


def cuda_provider_options(device_id: int = 0) -> dict[str, str]:
    """CUDA execution provider options, chosen on purpose.

    - cudnn_conv_algo_search HEURISTIC: cuDNN's own heuristic picks a convolution algorithm at once; the default
      (EXHAUSTIVE) benchmarks every algorithm again for each new input shape, and every case has its own slice size.
    - cudnn_conv_use_max_workspace 1: let the chosen algorithms use the workspace they want (faster convolutions).
    - arena_extend_strategy kSameAsRequested: grow the memory arena by what is needed, not by doubling, so a T4's
      16 GB is not reserved by one large case (each session has its own arena; the batch is shared among them).
    - gpu_mem_limit: only with SCT_GPU_MEM_LIMIT_MB, a cap on each session's arena (e.g. on a shared GPU).
    - use_tf32 0: ONNX Runtime enables TF32 convolutions and matrix products on Ampere and newer by default (10-bit
      mantissa); off, the GPU matches the CPU-made expectations. SCT_TF32=1 turns it on (faster, less exact).
    - do_copy_in_default_stream 1: copies and kernels in one stream (no races, no extra synchronisation).
    """
    options = {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "1",
        "arena_extend_strategy": "kSameAsRequested",
        "use_tf32": "1" if os.environ.get("SCT_TF32", "").strip() == "1" else "0",
        "do_copy_in_default_stream": "1",
    }
    limit_mb = _positive_int_env("SCT_GPU_MEM_LIMIT_MB")
    if limit_mb is not None:
        options["gpu_mem_limit"] = str(limit_mb * 2**20)
    return options


def default_tensorrt_cache() -> Path:
    """Where TensorRT engines are kept between runs: SCT_TRT_CACHE, else the user's cache folder (not /tmp, which
    grand-challenge empties for every job and many machines at every boot)."""
    configured = os.environ.get("SCT_TRT_CACHE", "").strip()
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "sct-synthrad" / "tensorrt"


def tensorrt_max_batch() -> int:
    return _positive_int_env("SCT_TRT_MAX_BATCH") or TRT_MAX_BATCH


def tensorrt_profile_shapes(inputs: list[tuple[str, list]]) -> dict[str, str]:
    """Explicit min/opt/max shapes of the model's dynamic inputs for TensorRT's optimisation profile.

    Without them TensorRT builds an engine for the first shapes it sees and rebuilds it for every new batch or
    slice size. The first dimension is the batch (1 .. SCT_TRT_MAX_BATCH, default 8); every other dynamic
    dimension is a slice side (16 .. SCT_TRT_MAX_SIZE pixels, default 640; latent inputs use the same range);
    fixed dimensions (channels) stay as they are. Shapes outside the range fail at run time with TensorRT's error.
    """
    max_batch = tensorrt_max_batch()
    max_size = _positive_int_env("SCT_TRT_MAX_SIZE") or TRT_MAX_SIZE
    min_size = min(TRT_MIN_SIZE, max_size)
    opt_size = min(TRT_OPT_SIZE, max_size)
    bounds = {"min": (1, min_size), "opt": (max(1, max_batch // 2), opt_size), "max": (max_batch, max_size)}
    shapes: dict[str, list[str]] = {key: [] for key in bounds}
    for name, shape in inputs:
        if all(isinstance(dim, int) for dim in shape):
            continue  # a fixed shape needs no profile
        for key, (batch, size) in bounds.items():
            dims = [dim if isinstance(dim, int) else (batch if axis == 0 else size) for axis, dim in enumerate(shape)]
            shapes[key].append(f"{name}:{'x'.join(str(dim) for dim in dims)}")
    return {f"trt_profile_{key}_shapes": ",".join(values) for key, values in shapes.items()}


def tensorrt_provider_options(device_id: int, inputs: list[tuple[str, list]]) -> dict[str, str]:
    """TensorRT execution provider options: explicit shape profiles for `inputs` (name, shape), an engine cache
    and a timing cache (default_tensorrt_cache()), so an engine is built once per model and profile, not once
    per run; fp16 kernels when SCT_TENSORRT_FP16=1 (TensorRT then chooses per layer)."""
    cache = str(default_tensorrt_cache())
    return {
        "device_id": str(device_id),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
        "trt_fp16_enable": "True" if os.environ.get("SCT_TENSORRT_FP16", "") == "1" else "False",
        **tensorrt_profile_shapes(inputs),
    }


def tensorrt_libraries_missing() -> str | None:
    """None when TensorRT's libraries load, else the loader's reason (checked once per process)."""
    if not _STATE.tensorrt_checked:
        _STATE.tensorrt_checked = True
        for name in TENSORRT_LIBRARIES:
            try:
                _load_library(name)
            except OSError as err:
                _STATE.tensorrt_missing = str(err) or f"{name} cannot be loaded"
                break
    return _STATE.tensorrt_missing


def _tensorrt_note(message: str) -> None:
    """A TensorRT problem, said once per process (every session would say the same)."""
    if not _STATE.tensorrt_logged:
        _STATE.tensorrt_logged = True
        LOG.warning("%s", message)


def tensorrt_usable(available: list[str]) -> bool:
    """SCT_TENSORRT=1, the TensorRT provider built into onnxruntime, and TensorRT's own libraries loadable."""
    if os.environ.get("SCT_TENSORRT", "") != "1":
        return False
    if TENSORRT not in available:
        _tensorrt_note("SCT_TENSORRT=1 but this onnxruntime has no TensorRT execution provider: using CUDA")
        return False
    missing = tensorrt_libraries_missing()
    if missing is not None:
        _tensorrt_note(f"SCT_TENSORRT=1 but TensorRT's libraries do not load ({missing}): using CUDA")
        return False
    return True


def providers_for(
    device: str, available: list[str] | None = None, tensorrt_inputs: list[tuple[str, list]] | None = None
) -> list:
    """The providers list for InferenceSession: [TensorRT,] CUDA (with their options) then the CPU, or the CPU.

    TensorRT goes first only when `tensorrt_inputs` (the model's inputs, for its shape profiles) are given, which
    create_session does when tensorrt_usable() says so; layers it cannot take fall to CUDA, then the CPU.
    """
    available = ort.get_available_providers() if available is None else available
    if device in ("auto", "cuda") and CUDA in available:
        device_id = cuda_device_id()
        providers: list = [(CUDA, cuda_provider_options(device_id)), CPU]
        if tensorrt_inputs is not None and TENSORRT in available:
            providers.insert(0, (TENSORRT, tensorrt_provider_options(device_id, tensorrt_inputs)))
        return providers
    return [CPU]


def _model_inputs(model_path: Path) -> list[tuple[str, list]]:
    """The model's inputs (name, shape with ints for fixed and names for dynamic dimensions), read on the CPU."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=[CPU])
    return [(item.name, list(item.shape)) for item in session.get_inputs()]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ORT_PREFIX = re.compile(r"^.*?\[([EW]):onnxruntime:[^\]]*\]\s*")
_ORT_STATUS = re.compile(r"^.*\[ONNXRuntimeError\] : \d+ : \w+ : ")


def _clean_reason(text: str, limit: int = 500) -> str:
    """One line of ONNX Runtime's message: colour codes, timestamps and source locations cut."""
    text = _ORT_STATUS.sub("", _ORT_PREFIX.sub("", _ANSI.sub("", text)))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason_from_log(lines: list[str]) -> str | None:
    """The most telling of ONNX Runtime's captured log lines: its errors first, else its warnings."""
    for level in ("E", "W"):
        found = []
        for line in lines:
            tag = _ORT_PREFIX.match(_ANSI.sub("", line))
            if tag and tag[1] == level and (text := _clean_reason(line)):
                found.append(text)
        if found:
            return "; ".join(dict.fromkeys(found))
    return None


@contextlib.contextmanager
def _captured_native_log() -> Iterator[list[str]]:
    """Capture what ONNX Runtime's native logger writes to stderr (file descriptor 2) while the block runs.

    Its provider-library load failures (e.g. "libcublasLt.so.12: cannot open shared object file") are only
    logged, not raised; they are collected here as the fallback's reason. Lines that are not ONNX Runtime's go
    back to stderr unchanged.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to redirect (closed): make the session without capturing
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        ort.set_default_logger_severity(2)
        try:
            yield lines
        finally:
            ort.set_default_logger_severity(4)
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            other = []
            for line in sink.read().decode("utf-8", "replace").splitlines():
                if ":onnxruntime:" in line:
                    lines.append(line)
                elif _ANSI.sub("", line).strip():  # not the colour reset ONNX Runtime ends its lines with
                    other.append(line)
            if other:
                sys.stderr.write("\n".join(other) + "\n")


def _open_session(model_path: Path, providers: list) -> tuple[ort.InferenceSession, str | None]:
    """The session on the first of these provider lists that works: as asked, without TensorRT, the CPU alone.

    ONNX Runtime's own fallback is off while the session is made: it retries without the provider options, and
    from TensorRT it falls to the CPU alone. Returns the session and ONNX Runtime's reason why a GPU provider
    did not load (None when everything asked for loaded).
    """
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    attempts = [providers]
    if names[0] == TENSORRT:
        attempts.append(providers[1:])
    if names != [CPU]:
        attempts.append([CPU])
    options = _session_options()
    reason: str | None = None
    for attempt in attempts:
        wanted = [p[0] if isinstance(p, tuple) else p for p in attempt]
        gpu = wanted != [CPU]
        failure: Exception | None = None
        with _captured_native_log() if gpu else contextlib.nullcontext([]) as log:
            try:
                session = ort.InferenceSession(
                    str(model_path), sess_options=options, providers=attempt, enable_fallback=0
                )
            except Exception as err:  # onnxruntime raises its own exception types
                if not gpu:
                    raise  # the model itself cannot load: its own error, whatever the GPU said
                failure = err
        if failure is not None:
            reason = _clean_reason(str(failure))
            if wanted[0] == TENSORRT:
                _tensorrt_note(f"TensorRT could not make the session ({reason}): using CUDA")
            continue
        used = session.get_providers()
        if wanted[0] == TENSORRT and TENSORRT not in used:
            _tensorrt_note(f"TensorRT did not load ({_reason_from_log(log) or 'no reason given'}): using CUDA")
        if CUDA in wanted and CUDA not in used:
            reason = _reason_from_log(log) or reason or "no reason given by ONNX Runtime"
        elif gpu:
            reason = None
        if hasattr(session, "enable_fallback"):
            session.enable_fallback()  # at run time, ONNX Runtime's own fallback as before
        return session, reason
    raise AssertionError("unreachable: the CPU attempt returns or raises")


def create_session(model_path: Path, device: str = "auto") -> ort.InferenceSession:
    """Load an ONNX model on `device` ('auto', 'cuda' or 'cpu').

    onnxruntime-gpu lists the CUDA provider even on machines without a GPU and then silently falls back, so
    the provider that was actually used is read back from the session, and `cuda` fails loudly if it is not it.
    """
    if device not in ("auto", "cuda", "cpu"):
        raise DeviceError(f"unknown device {device!r}; use auto, cuda or cpu")
    if device != "cpu" and not _STATE.environment_logged:
        _STATE.environment_logged = True
        LOG.info("%s", gpu_environment())
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise DeviceError("--device cuda: this onnxruntime build has no CUDA execution provider")
    tensorrt_inputs = None
    if device != "cpu" and CUDA in available and tensorrt_usable(available):
        tensorrt_inputs = _model_inputs(Path(model_path))
    providers = providers_for(device, available, tensorrt_inputs)
    session, reason = _open_session(Path(model_path), providers)
    used = session.get_providers()
    if len(providers) > 1 and CUDA not in used:
        if device == "cuda":
            raise DeviceError(f"--device cuda: the CUDA execution provider did not load: {reason}")
        if not _STATE.cuda_fallback_logged:
            _STATE.cuda_fallback_logged = True
            LOG.warning("CUDA unavailable, running on the CPU. ONNX Runtime says: %s", reason)
        else:
            LOG.debug("CUDA unavailable for %s too: on the CPU", Path(model_path).name)
    if used[0] in (CUDA, TENSORRT):
        _STATE.live[session] = tensorrt_max_batch() if used[0] == TENSORRT else 0
    LOG.debug("loaded %s on %s", Path(model_path).name, used[0])
    return session


def session_device(session: ort.InferenceSession) -> str:
    """'cuda' or 'cpu': where this session runs (TensorRT runs on the CUDA device)."""
    return "cuda" if session.get_providers()[0] in (CUDA, TENSORRT) else "cpu"


def live_gpu_sessions() -> int:
    """How many sessions made here run on the GPU and are alive: each holds its own CUDA memory arena."""
    return len(_STATE.live)


def tensorrt_batch_limit() -> int | None:
    """The largest batch every live TensorRT session's shape profile accepts (None: no TensorRT session)."""
    limits = [limit for limit in _STATE.live.values() if limit]
    return min(limits) if limits else None


def free_gpu_bytes(device_id: int | None = None) -> int | None:
    """Free memory of the CUDA device (cudaMemGetInfo through the CUDA runtime library), None when unknown.

    The CUDA runtime comes from the base image (nvidia/cuda ... cudnn-runtime), not from the onnxruntime-gpu
    wheel; no torch needed. Any failure (no library, no device) gives None, and the caller keeps its fixed budget."""
    device_id = cuda_device_id() if device_id is None else device_id
    for name in ("libcudart.so.12", "libcudart.so"):
        try:
            runtime = _load_library(name)
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


def _cuda_version(number: int) -> str:
    """CUDA's integer version (12020) as text (12.2)."""
    return f"{number // 1000}.{number % 1000 // 10}"


def _driver_version() -> str | None:
    """The NVIDIA kernel driver's version (535.104.05): /proc/driver/nvidia/version, else NVML."""
    with contextlib.suppress(OSError):
        text = NVIDIA_DRIVER_VERSION_FILE.read_text(errors="replace")
        found = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
        if found:
            return found[1]
    try:
        nvml = _load_library("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return None
        buffer = ctypes.create_string_buffer(96)
        try:
            if nvml.nvmlSystemGetDriverVersion(buffer, ctypes.c_uint(96)) == 0:
                return buffer.value.decode(errors="replace")
        finally:
            nvml.nvmlShutdown()
    except (OSError, AttributeError):
        pass
    return None


def _driver_part(device_id: int) -> str:
    """The driver, the CUDA version it supports and the device, from libcuda (the driver API)."""
    try:
        cuda = _load_library("libcuda.so.1")
    except OSError as err:
        return f"no NVIDIA driver in this container ({err})"
    driver = _driver_version()
    part = f"NVIDIA driver {driver or 'version unknown'}"
    try:
        version = ctypes.c_int()
        if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
            part += f" (supports CUDA {_cuda_version(version.value)})"
        status = cuda.cuInit(0)
        if status != 0:
            name = ctypes.c_char_p()
            cuda.cuGetErrorString(status, ctypes.byref(name))
            return part + f", no usable GPU (cuInit: {(name.value or b'error %d' % status).decode(errors='replace')})"
        count, handle = ctypes.c_int(), ctypes.c_int()
        cuda.cuDeviceGetCount(ctypes.byref(count))
        if device_id >= count.value or cuda.cuDeviceGet(ctypes.byref(handle), device_id) != 0:
            return part + f", {count.value} device(s), none numbered {device_id}"
        name_buffer = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name_buffer, 256, handle)
        memory = ctypes.c_size_t()
        cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), handle)
        major, minor = ctypes.c_int(), ctypes.c_int()
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, handle)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle)  # ..._MINOR
        part += (
            f", {count.value} device(s), using {device_id}: {name_buffer.value.decode(errors='replace')} "
            f"(sm_{major.value}{minor.value}, {memory.value / 2**30:.1f} GiB)"
        )
    except (AttributeError, OSError) as err:
        part += f" (device query failed: {err})"
    return part


def gpu_environment(device_id: int | None = None) -> str:
    """One line for the start-up log: driver and the CUDA it supports, device, CUDA runtime, onnxruntime's build.

    Read through the libraries themselves (libcuda, libcudart, NVML or /proc); whatever is absent is said so."""
    try:
        device_id = cuda_device_id() if device_id is None else device_id
    except DeviceError as err:
        return f"GPU environment: {err}"
    parts = [_driver_part(device_id)]
    try:
        runtime, version = _load_library("libcudart.so.12"), ctypes.c_int()
        if runtime.cudaRuntimeGetVersion(ctypes.byref(version)) == 0:
            parts.append(f"CUDA runtime {_cuda_version(version.value)}")
    except (OSError, AttributeError):
        parts.append("no CUDA 12 runtime (libcudart.so.12)")
    built_for = getattr(ort, "cuda_version", "") or ""
    parts.append(f"onnxruntime {ort.__version__}" + (f" built for CUDA {built_for}" if built_for else ""))
    return "GPU environment: " + "; ".join(parts)
