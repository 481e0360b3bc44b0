"""The GPU path of engine/runtime.py without a GPU: ONNX Runtime replaced by a fake that behaves like
onnxruntime-gpu 1.23.2 does on a platform machine (provider lists, CUDA load failures logged natively or raised,
TensorRT's libraries present or absent), and the driver libraries replaced by fakes read through ctypes."""

from __future__ import annotations

import gc
import logging
import os
import re
from pathlib import Path

import onnxruntime as real_ort
import pytest

from engine import runtime
from engine.generators import GPU_BYTES_PER_PIXEL, GPU_MEMORY_SHARE, auto_batch_size
from engine.kinds import load_generator
from engine.manifest import DEFAULT_MANIFEST, load_manifest
from engine.runtime import CPU, CUDA, TENSORRT, DeviceError, create_session

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "test" / "container" / "smoke.onnx"
#: What onnxruntime-gpu 1.23.2 writes to stderr when its CUDA provider library cannot load (seen on these machines,
#: with the missing library changed): an error line in colour, then a colour reset.
CUDNN_MISSING = (
    "\x1b[1;31m2026-12-06 00:58:34.665721876 [E:onnxruntime:Default, provider_bridge_ort.cc:2251 "
    "TryGetProviderInfo_CUDA] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1844 "
    "onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load "
    "library libonnxruntime_providers_cuda.so with error: libcudnn.so.9: cannot open shared object file: No such "
    "file or directory\n\x1b[m\n\x1b[0;93m2026-12-06 00:58:34.665789060 [W:onnxruntime:Default, "
    "onnxruntime_pybind_state.cc:1013 CreateExecutionProviderFactoryInstance] Failed to create "
    "CUDAExecutionProvider. Require cuDNN 9.* and CUDA 12.*.\x1b[m\n"
)


def names(providers: list) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in providers]


class FakeOrt:
    """The parts of the onnxruntime module that engine.runtime uses. Every session really runs on the CPU
    (a real CPU session underneath); `loads(providers)` says which providers it claims, or raises as ORT does."""

    GraphOptimizationLevel = real_ort.GraphOptimizationLevel
    SessionOptions = real_ort.SessionOptions
    __version__ = real_ort.__version__
    cuda_version = "12.2"

    def __init__(self, available: list[str], loads) -> None:
        self.available = available
        self.loads = loads
        self.calls: list[tuple[list, dict]] = []  # (providers, keyword arguments) of every session made
        fake = self

        class Session:
            def __init__(self, path, sess_options=None, providers=None, **kwargs) -> None:
                fake.calls.append((providers, kwargs))
                self._used = fake.loads(providers)
                self._inner = real_ort.InferenceSession(str(path), sess_options, providers=[CPU])

            def get_providers(self) -> list[str]:
                return list(self._used)

            def __getattr__(self, name):  # inputs, outputs, run, io_binding: the real CPU session's
                return getattr(self._inner, name)

        self.InferenceSession = Session

    def get_available_providers(self) -> list[str]:
        return list(self.available)

    def set_default_logger_severity(self, level: int) -> None:
        pass

    def gpu_calls(self) -> list[list]:
        """The provider lists of the sessions that were meant to run (not the CPU read of a model's inputs)."""
        return [providers for providers, kwargs in self.calls if kwargs.get("enable_fallback") == 0]


@pytest.fixture
def fresh(monkeypatch):
    """A fresh once-per-process state (nothing reported yet, no live sessions) and no GPU settings from outside."""
    monkeypatch.setattr(runtime, "_STATE", runtime._ProcessState())
    for name in ("SCT_TENSORRT", "SCT_TF32", "SCT_GPU_MEM_LIMIT_MB", "SCT_TRT_CACHE", "SCT_TRT_MAX_BATCH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "_load_library", missing_library)
    return monkeypatch


def missing_library(name: str):
    raise OSError(f"{name}: cannot open shared object file: No such file or directory")


def use(monkeypatch, fake: FakeOrt) -> FakeOrt:
    monkeypatch.setattr(runtime, "ort", fake)
    return fake


def cuda_loads(providers):
    return [n for n in names(providers) if n != TENSORRT]


def everything_loads(providers):
    return names(providers)


# --- CUDA load failures: ONNX Runtime's own reason, once per process ---------------------------------------------------


def test_a_cuda_library_failure_is_reported_once_with_onnx_runtimes_reason(fresh, caplog, capfd):
    def cudnn_missing(providers):
        if CUDA in names(providers):
            os.write(2, CUDNN_MISSING.encode())  # what ORT's native logger writes, straight to file descriptor 2
        return [CPU]

    fake = use(fresh, FakeOrt([TENSORRT, CUDA, CPU], cudnn_missing))
    with caplog.at_level(logging.INFO, logger="engine.runtime"):
        sessions = [create_session(SMOKE, "auto") for _ in range(6)]  # an ensemble of three and its fallback
    assert all(s.get_providers() == [CPU] for s in sessions)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings  # once per process, not once per member
    assert "running on the CPU" in warnings[0]
    assert "libcudnn.so.9: cannot open shared object file" in warnings[0]  # ORT's own reason, cleaned
    assert "\x1b" not in warnings[0] and "provider_bridge_ort.cc" not in warnings[0]
    assert "onnxruntime" not in capfd.readouterr().err  # the raw native lines do not reach the log as noise
    assert all(names(call) == [CUDA, CPU] for call in fake.gpu_calls())
    assert runtime.live_gpu_sessions() == 0  # CPU sessions hold no GPU arena
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum("GPU environment" in m for m in info) == 1  # the start-up line, once


def test_a_cuda_initialisation_error_is_reported_and_the_case_runs_on_the_cpu(fresh, caplog):
    def old_driver(providers):
        if CUDA in names(providers):
            raise RuntimeError(
                "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:123 CUDA failure 35: CUDA driver "
                "version is insufficient for CUDA runtime version ; GPU=0 ; hostname=x ; expr=cudaSetDevice(0);"
            )
        return [CPU]

    fake = use(fresh, FakeOrt([CUDA, CPU], old_driver))
    with caplog.at_level(logging.WARNING, logger="engine.runtime"):
        create_session(SMOKE, "auto")
        create_session(SMOKE, "auto")
    assert [names(c) for c in fake.gpu_calls()] == [[CUDA, CPU], [CPU], [CUDA, CPU], [CPU]]
    assert len(caplog.records) == 1 and "CUDA driver version is insufficient" in caplog.records[0].getMessage()
    with pytest.raises(DeviceError, match="--device cuda: .*CUDA driver version is insufficient"):
        create_session(SMOKE, "cuda")


def test_without_a_gpu_here_the_real_onnxruntime_gives_its_reason(fresh, caplog):
    """The real onnxruntime-gpu on this machine: its native log is captured and its reason reported once."""
    fresh.setattr(runtime, "ort", real_ort)
    with caplog.at_level(logging.WARNING, logger="engine.runtime"):
        first = create_session(SMOKE, "auto")
        create_session(SMOKE, "auto")
    if runtime.session_device(first) == "cuda":
        pytest.skip("CUDA loads here: the fallback cannot be exercised")
    assert len(caplog.records) == 1
    reason = caplog.records[0].getMessage().split("ONNX Runtime says: ", 1)[1]
    assert reason and reason != "no reason given by ONNX Runtime" and "\x1b" not in reason


# --- TensorRT: only when its libraries load, with explicit shape profiles ----------------------------------------------


def test_tensorrt_is_skipped_with_one_warning_when_its_libraries_do_not_load(fresh, caplog):
    fresh.setenv("SCT_TENSORRT", "1")
    fake = use(fresh, FakeOrt([TENSORRT, CUDA, CPU], cuda_loads))
    with caplog.at_level(logging.WARNING, logger="engine.runtime"):
        sessions = [create_session(SMOKE, "auto") for _ in range(3)]
    assert [names(c) for c in fake.gpu_calls()] == [[CUDA, CPU]] * 3  # straight to CUDA, never the CPU alone
    assert all(s.get_providers()[0] == CUDA for s in sessions)
    assert len(caplog.records) == 1 and "libnvinfer.so.10" in caplog.records[0].getMessage()


def test_tensorrt_goes_first_with_explicit_profiles_when_its_libraries_load(fresh, tmp_path):
    fresh.setenv("SCT_TENSORRT", "1")
    fresh.setattr(runtime, "_load_library", lambda name: object())  # libnvinfer.so.10, libnvonnxparser.so.10 load
    fresh.setenv("HOME", "/home/algorithm")
    fresh.delenv("XDG_CACHE_HOME", raising=False)
    fake = use(fresh, FakeOrt([TENSORRT, CUDA, CPU], everything_loads))
    generator = REPO / "model_weights" / "l1_fold0.onnx"  # inputs mr [batch, 5, height, width], noise [batch, 1, ...]
    session = create_session(generator, "auto")
    (providers,) = fake.gpu_calls()
    assert names(providers) == [TENSORRT, CUDA, CPU] and session.get_providers()[0] == TENSORRT
    options = providers[0][1]
    assert options["trt_profile_min_shapes"] == "mr:1x5x16x16,noise:1x1x16x16"
    assert options["trt_profile_opt_shapes"] == "mr:4x5x384x384,noise:4x1x384x384"
    assert options["trt_profile_max_shapes"] == "mr:8x5x640x640,noise:8x1x640x640"
    assert options["trt_engine_cache_path"] == "/home/algorithm/.cache/sct-synthrad/tensorrt"  # not /tmp
    assert providers[1][1]["use_tf32"] == "0"  # the CUDA layers keep the CUDA options
    # the automatic batch stays inside the profile, however much memory is free
    spec = load_manifest(DEFAULT_MANIFEST).models["l1"]
    assert auto_batch_size(spec, "cuda", 96 * 96, free_gpu=80 * 2**30) == 8
    fresh.setenv("SCT_TRT_MAX_BATCH", "32")
    fresh.setenv("SCT_TRT_MAX_SIZE", "1024")
    shapes = runtime.tensorrt_profile_shapes([("x", ["batch", 4, "h", "w"]), ("t", ["batch"]), ("k", [1, 2])])
    assert shapes["trt_profile_max_shapes"] == "x:32x4x1024x1024,t:32"  # fixed-shape inputs need no profile


def test_a_failed_tensorrt_session_falls_back_to_cuda_with_its_options(fresh, caplog):
    """onnxruntime 1.23.2's own fallback from a failed TensorRT session is the CPU alone, without options."""

    def tensorrt_fails(providers):
        if names(providers)[0] == TENSORRT:
            raise RuntimeError("RegisterTensorRTPluginsAsCustomOps: Please install TensorRT libraries")
        return names(providers)

    fresh.setenv("SCT_TENSORRT", "1")
    fresh.setattr(runtime, "_load_library", lambda name: object())
    fake = use(fresh, FakeOrt([TENSORRT, CUDA, CPU], tensorrt_fails))
    with caplog.at_level(logging.WARNING, logger="engine.runtime"):
        session = create_session(SMOKE, "auto")
        create_session(SMOKE, "auto")
    calls = fake.gpu_calls()
    assert [names(c) for c in calls[:2]] == [[TENSORRT, CUDA, CPU], [CUDA, CPU]]
    assert calls[1][0] == (CUDA, runtime.cuda_provider_options(0)) and session.get_providers()[0] == CUDA
    assert len(caplog.records) == 1 and "Please install TensorRT libraries" in caplog.records[0].getMessage()


# --- provider options: TF32 and memory ------------------------------------------------------------------------------------


def test_cuda_options_keep_tf32_off_unless_asked_and_cap_memory_when_asked(fresh):
    options = runtime.cuda_provider_options(0)
    assert options["use_tf32"] == "0"  # GPU agrees with the CPU-made expectations within 1 HU
    assert options["arena_extend_strategy"] == "kSameAsRequested"
    assert "gpu_mem_limit" not in options
    fresh.setenv("SCT_TF32", "1")
    fresh.setenv("SCT_GPU_MEM_LIMIT_MB", "3000")
    options = runtime.cuda_provider_options(0)
    assert options["use_tf32"] == "1" and options["gpu_mem_limit"] == str(3000 * 2**20)
    for bad in ("3 GB", "0", "-5"):
        fresh.setenv("SCT_GPU_MEM_LIMIT_MB", bad)
        with pytest.raises(DeviceError, match="SCT_GPU_MEM_LIMIT_MB"):
            runtime.cuda_provider_options(0)


# --- GPU memory: the batch is shared among the live GPU sessions --------------------------------------------------------


def test_the_batch_is_shared_among_the_live_gpu_sessions(fresh):
    use(fresh, FakeOrt([CUDA, CPU], cuda_loads))
    models = load_manifest(DEFAULT_MANIFEST).models
    route = load_manifest(DEFAULT_MANIFEST).resolve("HN", None)
    free, pixels = 14 * 2**30, 256 * 256  # a T4 with the models loaded; a head slice
    alone = int(GPU_MEMORY_SHARE * free // (pixels * GPU_BYTES_PER_PIXEL))
    assert auto_batch_size(models["l1"], "cuda", pixels, free_gpu=free) == alone
    ensemble = models["l1_folds"]
    primary = load_generator(ensemble, "auto")  # the shipped fold ensemble: three members, three arenas
    assert primary.device == "cuda" and runtime.live_gpu_sessions() == 3
    per_arena = int(GPU_MEMORY_SHARE * free // (3 * pixels * GPU_BYTES_PER_PIXEL))
    assert auto_batch_size(models["l1"], "cuda", pixels, free_gpu=free) == per_arena < alone
    assert auto_batch_size(ensemble, "cuda", pixels, free_gpu=free) == per_arena // 2  # flip: twice the batch
    fallback = load_generator(route.fallback, "auto")  # the latent model: encoder, denoiser, decoder
    assert runtime.live_gpu_sessions() == 6
    six = int(GPU_MEMORY_SHARE * free // (6 * pixels * GPU_BYTES_PER_PIXEL))
    assert auto_batch_size(route.fallback, "cuda", pixels, free_gpu=free) == six
    assert auto_batch_size(route.fallback, "cuda", pixels, free_gpu=free, gpu_sessions=2) > six
    del primary, fallback
    gc.collect()
    assert runtime.live_gpu_sessions() == 0  # freed sessions free their share


# --- the start-up line: driver and CUDA versions, read without crashing when absent --------------------------------------


class FakeLibrary:
    """A driver library answering through ctypes arguments the way libcuda / libcudart / NVML do."""

    def __init__(self, **answers) -> None:
        self.answers = answers

    def __getattr__(self, name):
        if name not in self.answers:
            raise AttributeError(name)
        return self.answers[name]


def set_value(argument, value) -> int:
    argument._obj.value = value  # ctypes.byref(x) -> x
    return 0


def test_the_start_up_line_names_driver_cuda_and_device(fresh, tmp_path):
    def set_name(buffer, size, handle):
        buffer.value = b"Tesla T4"
        return 0

    def attribute(argument, which, handle):
        return set_value(argument, {75: 7, 76: 5}[which])

    def driver_version(buffer, size):
        buffer.value = b"535.104.05"
        return 0

    libraries = {
        "libcuda.so.1": FakeLibrary(
            cuDriverGetVersion=lambda v: set_value(v, 12020),
            cuInit=lambda flags: 0,
            cuDeviceGetCount=lambda n: set_value(n, 1),
            cuDeviceGet=lambda h, i: set_value(h, 0),
            cuDeviceGetName=set_name,
            cuDeviceTotalMem_v2=lambda m, h: set_value(m, 15 * 2**30),
            cuDeviceGetAttribute=attribute,
        ),
        "libcudart.so.12": FakeLibrary(cudaRuntimeGetVersion=lambda v: set_value(v, 12060)),
        "libnvidia-ml.so.1": FakeLibrary(
            nvmlInit_v2=lambda: 0, nvmlSystemGetDriverVersion=driver_version, nvmlShutdown=lambda: 0
        ),
    }

    def load(name):
        return libraries[name] if name in libraries else missing_library(name)

    fresh.setattr(runtime, "_load_library", load)
    fresh.setattr(runtime, "NVIDIA_DRIVER_VERSION_FILE", tmp_path / "absent")  # no /proc/driver/nvidia: NVML
    line = runtime.gpu_environment(0)
    assert "NVIDIA driver 535.104.05 (supports CUDA 12.2)" in line
    assert "Tesla T4 (sm_75, 15.0 GiB)" in line and "CUDA runtime 12.6" in line
    assert "built for CUDA" in line
    proc = tmp_path / "version"  # the open kernel module's wording
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (dvs)\n")
    fresh.setattr(runtime, "NVIDIA_DRIVER_VERSION_FILE", proc)
    assert "NVIDIA driver 550.54.15 (supports CUDA 12.2)" in runtime.gpu_environment(0)

    libraries["libcuda.so.1"].answers.update(
        cuInit=lambda flags: 100, cuGetErrorString=lambda status, text: set_value(text, b"no CUDA-capable device")
    )
    assert "no usable GPU (cuInit: no CUDA-capable device)" in runtime.gpu_environment(0)


def test_the_start_up_line_says_what_is_absent_without_crashing(fresh):
    line = runtime.gpu_environment(0)  # every library missing (the fixture's loader)
    assert line.startswith("GPU environment: no NVIDIA driver in this container (libcuda.so.1")
    assert "no CUDA 12 runtime" in line
    fresh.setenv("SCT_CUDA_DEVICE", "first")
    assert "SCT_CUDA_DEVICE" in runtime.gpu_environment()


# --- the image starts on any driver --------------------------------------------------------------------------------------


def test_the_final_image_stage_disables_the_driver_requirement_check():
    """The CUDA base image's NVIDIA_REQUIRE_CUDA makes the legacy NVIDIA runtime refuse drivers of some branches;
    the final stage sets NVIDIA_DISABLE_REQUIRE=1 so the container starts and the engine decides (CPU fallback)."""
    text = (REPO / "Dockerfile").read_text()
    instructions = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.startswith("#")))
    stages = re.split(r"^FROM\s", instructions, flags=re.MULTILINE)
    final = stages[-1]
    settings = [line for line in final.splitlines() if line.strip().startswith("ENV ")]
    assert any(re.search(r"(^|\s)NVIDIA_DISABLE_REQUIRE=(1|true)(\s|$)", line[4:]) for line in settings), settings


# --- gpu_check: the peak GPU memory is sampled while the runs go on ---------------------------------------------------


def load_gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_samples_memory_during_a_run_and_keeps_the_peak():
    import threading

    gpu_check = load_gpu_check()
    readings = [300.0, 2900.0, 4100.0, 350.0]  # idle, loading, the largest batch, the process gone again
    seen = threading.Event()

    def read():
        if readings:
            value = readings.pop(0)
            if not readings:
                seen.set()
            return value
        return 350.0  # idle after the run: all a single reading afterwards would see

    with gpu_check.GpuMemorySampler(read, interval_s=0.001) as sampler:
        assert seen.wait(60), "the sampler never read during the run"
    assert sampler.peak_mb == 4100.0 and sampler.samples >= 5
    with gpu_check.GpuMemorySampler(None) as nothing:  # no nvidia-smi, no pynvml: no number, no thread
        pass
    assert nothing.peak_mb is None and nothing.samples == 0
