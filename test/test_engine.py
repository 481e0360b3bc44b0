"""The ONNX engine on small models built here: padding, batching, context, noise determinism, samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import process
from engine.generators import OnnxSliceGenerator, slice_noise
from engine.manifest import DEFAULT_MANIFEST, load_manifest
from engine.runtime import CUDA, DeviceError, create_session
from preprocessing.slices import iter_slice_batches, stack_indices
from sct_testing import identity_model_entry, onnx_model, read_array, write_case, write_manifest


def run(tmp_path, entry, behaviour, extra=(), out="out"):
    onnx_model(tmp_path / "weights" / "gen.onnx", context=entry["context_slices"], behaviour=behaviour)
    manifest = write_manifest(tmp_path / "weights", {"gen": entry})
    mr_path, mask_path = write_case(tmp_path / "in")
    code = process.main(
        [
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / out),
            "--manifest",
            str(manifest),
            "--no-progress",
            *extra,
        ]
    )
    return code, mr_path, mask_path, tmp_path / out / "images" / "synthetic-ct" / mr_path.name


def test_padding_makes_odd_slices_fit_a_stride_4_network(tmp_path):
    entry = identity_model_entry(divisible_by=4)
    code, mr_path, mask_path, out = run(tmp_path, entry, "stride4")
    assert code == 0
    # The same model without padding cannot run on 37 x 29 slices, and the case fails cleanly instead.
    entry_unpadded = identity_model_entry(divisible_by=1)
    code, _, _, out2 = run(tmp_path, entry_unpadded, "stride4", out="out2")
    assert code == 1 and not out2.exists()


def test_noise_is_seeded_per_slice_so_batch_size_does_not_matter(tmp_path):
    entry = identity_model_entry()
    outputs = []
    for index, batch in enumerate((1, 4, 11, 4)):
        code, _, _, out = run(tmp_path, entry, "noise", ["--batch-size", str(batch)], out=f"out{index}")
        assert code == 0
        outputs.append(read_array(out))
    for other in outputs[1:]:
        np.testing.assert_array_equal(outputs[0], other)
    # The noise really reaches the output: a different run seed changes it.
    entry_seeded = {**identity_model_entry(), "sampler": {"seed": 7}}
    code, _, mask_path, out = run(tmp_path, entry_seeded, "noise", out="seed7")
    inside = read_array(mask_path) > 0
    assert np.abs(read_array(out) - outputs[0])[inside].mean() > 5.0


def test_context_slices_are_read_with_replicated_edges(tmp_path):
    entry = identity_model_entry(context=5)
    code, mr_path, mask_path, out = run(tmp_path, entry, "context")
    assert code == 0
    mr, mask = read_array(mr_path).astype(np.float64), read_array(mask_path)
    inside = mask > 0
    low, high = mr[inside].min(), mr[inside].max()
    normalised = np.where(inside, (mr - low) / (high - low) * 2 - 1, -1.0)
    indices = stack_indices(mr.shape[0], 5, np.arange(mr.shape[0]))
    want = (normalised[indices].mean(axis=1) + 1) / 2 * 1000
    got = read_array(out)
    np.testing.assert_allclose(got[inside], want[inside], atol=0.05)


def test_samples_write_the_mean_and_a_standard_deviation_map(tmp_path):
    entry = identity_model_entry()
    code, mr_path, mask_path, out = run(tmp_path, entry, "noise", ["--samples", "6"])
    assert code == 0
    std_path = tmp_path / "out" / "images" / "synthetic-ct-uncertainty" / mr_path.name
    std, inside = read_array(std_path), read_array(mask_path) > 0
    # noise * 0.1 in [-1, 1] space is 50 HU in a 1000 HU window: the population std over 6 draws is near 50 * sqrt(5/6).
    assert 35.0 < std[inside].mean() < 55.0
    assert np.all(std[~inside] == 0)
    assert (
        len(list((tmp_path / "out" / "images" / "synthetic-ct").iterdir())) == 1
    )  # the evaluator reads the first file


def test_slice_batches_cover_every_slice_once():
    volume = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    seen = []
    for centres, stacks in iter_slice_batches(volume, 3, batch_size=3):
        assert stacks.shape == (len(centres), 3, 2, 3)
        np.testing.assert_array_equal(stacks[:, 1], volume[centres])
        seen.extend(centres.tolist())
    assert seen == list(range(7))


def test_noise_depends_only_on_the_slice_seed():
    a = slice_noise(np.array([5, 6]), 2, 4, 4)
    b = slice_noise(np.array([6]), 2, 4, 4)
    np.testing.assert_array_equal(a[1], b[0])
    assert not np.array_equal(a[0], a[1])


def test_manifest_context_must_match_the_model(tmp_path):
    onnx_model(tmp_path / "gen.onnx", context=3)
    manifest = load_manifest(write_manifest(tmp_path, {"gen": identity_model_entry(context=5)}))
    with pytest.raises(Exception, match="reads 3 slices"):
        OnnxSliceGenerator(manifest.models["gen"], "cpu")


def test_cpu_is_chosen_when_cuda_does_not_load(tmp_path):
    path = onnx_model(tmp_path / "gen.onnx")
    session = create_session(path, "auto")
    assert session.get_providers()[-1] == "CPUExecutionProvider"
    if CUDA in ort.get_available_providers() and session.get_providers()[0] == CUDA:
        pytest.skip("a GPU is present: the CUDA error path cannot be exercised here")
    with pytest.raises(DeviceError, match="--device cuda"):
        create_session(path, "cuda")


def test_cuda_provider_options_are_chosen_on_purpose():
    from engine.runtime import CPU, CUDA, cuda_provider_options, providers_for

    options = cuda_provider_options(1)
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"  # no re-tuning for every new slice size
    assert options["device_id"] == "1" and options["arena_extend_strategy"] == "kSameAsRequested"
    assert providers_for("auto", [CUDA, CPU]) == [(CUDA, cuda_provider_options(0)), CPU]
    assert providers_for("cpu", [CUDA, CPU]) == [CPU]
    assert providers_for("auto", [CPU]) == [CPU]


def test_the_cuda_provider_really_runs_a_model_when_a_gpu_exists(tmp_path):
    from engine.runtime import create_session, session_device

    path = onnx_model(tmp_path / "m.onnx")
    try:
        session = create_session(path, "cuda")
    except Exception as err:  # noqa: BLE001 - no GPU here: say why, do not pass silently
        pytest.skip(f"no usable CUDA execution provider on this machine ({err})")
    assert session_device(session) == "cuda"
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    (y,) = session.run(None, {"mr": x})
    assert np.allclose(y, x, atol=1e-6)


def test_the_gpu_check_runs_its_cpu_half(tmp_path):
    """benchmarks/gpu_check.py in CI-safe form: the CPU half on a tiny case writes its report."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_check.py",
            "--cpu-only",
            "--shape",
            "4,48,48",
            "--models",
            "l1,l1_fp16,ldm2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert {r["model"] for r in report["runs"]} == {"l1", "l1_fp16", "ldm N=2"}
    assert all(r["exit"] == 0 and r["device"] == "cpu" for r in report["runs"])
    for run in (r for r in report["runs"] if r["model"] == "l1_fp16"):  # the float16 copy against float32 l1
        assert 0 < run["parity_hu"]["mean"] < 2.0, run
    assert json.loads(done.stdout.strip().splitlines()[-1])["devices"] == ["cpu"]


def test_sct_threads_sets_the_onnx_runtime_threads_and_rejects_nonsense(tmp_path, monkeypatch):
    path = onnx_model(tmp_path / "gen.onnx")
    monkeypatch.setenv("SCT_THREADS", "1")
    assert create_session(path, "cpu").get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("SCT_THREADS", "3")
    assert create_session(path, "cpu").get_session_options().intra_op_num_threads == 3
    for bad in ("two", "0", "-1", "1.5"):
        monkeypatch.setenv("SCT_THREADS", bad)
        with pytest.raises(DeviceError, match="SCT_THREADS"):
            create_session(path, "cpu")


def test_automatic_batch_size_keeps_the_activation_budget():
    from engine.generators import auto_batch_size

    models = load_manifest(DEFAULT_MANIFEST).models
    drifting = models["l1"]
    for pixels in (96 * 96, 256 * 256, 400 * 400, 512 * 512, 2048 * 2048):
        for device, budget in (("cpu", 4_000_000), ("cuda", 64_000_000)):
            batch = auto_batch_size(drifting, device, pixels)
            assert 1 <= batch <= 64
            assert batch == 1 or batch * pixels * 16 <= budget  # within the budget unless one slice exceeds it
            assert batch == 64 or (batch + 1) * pixels * 16 > budget  # and not needlessly small
    assert auto_batch_size(drifting, "cpu", 400 * 400) < auto_batch_size(drifting, "cuda", 400 * 400)
    assert auto_batch_size(models["water"], "cpu", 512 * 512) == 64  # no network, no activations


def test_gpu_batch_size_follows_the_free_gpu_memory():
    from engine.generators import GPU_BYTES_PER_PIXEL, GPU_MEMORY_SHARE, auto_batch_size

    spec = load_manifest(DEFAULT_MANIFEST).models["l1"]
    pixels = 400 * 400
    t4_free = 14 * 2**30  # what a 16 GB T4 has free with the models loaded
    batch = auto_batch_size(spec, "cuda", pixels, free_gpu=t4_free)
    assert batch == int(GPU_MEMORY_SHARE * t4_free // (pixels * GPU_BYTES_PER_PIXEL)) and 1 < batch < 64
    assert auto_batch_size(spec, "cuda", pixels, free_gpu=2 * t4_free) > batch  # more free memory, larger batches
    assert auto_batch_size(spec, "cuda", pixels, free_gpu=10 * 2**20) == 1  # nearly full: one slice at a time
    assert auto_batch_size(spec, "cuda", 96 * 96, free_gpu=80 * 2**30) == 64  # capped


def test_tensorrt_goes_first_only_when_asked_for_and_installed(monkeypatch, caplog):
    from engine import runtime
    from engine.runtime import CPU, CUDA, TENSORRT, providers_for, tensorrt_usable

    monkeypatch.setattr(runtime, "_STATE", runtime._ProcessState())
    monkeypatch.delenv("SCT_TENSORRT", raising=False)
    inputs = [("mr", ["batch", 5, "height", "width"])]
    assert not tensorrt_usable([TENSORRT, CUDA, CPU])  # not asked for: CUDA as before
    assert providers_for("auto", [TENSORRT, CUDA, CPU])[0][0] == CUDA
    monkeypatch.setenv("SCT_TENSORRT", "1")
    monkeypatch.setenv("SCT_TRT_CACHE", "/var/cache/engines")
    monkeypatch.setattr(runtime, "_load_library", lambda name: object())  # TensorRT's libraries load
    assert tensorrt_usable([TENSORRT, CUDA, CPU])
    first = providers_for("auto", [TENSORRT, CUDA, CPU], inputs)[0]
    assert first[0] == TENSORRT and first[1]["trt_engine_cache_enable"] == "True"
    assert first[1]["trt_engine_cache_path"] == "/var/cache/engines"
    with caplog.at_level("WARNING"):
        assert not tensorrt_usable([CUDA, CPU])  # asked for, not built in: a warning, CUDA runs
        assert providers_for("auto", [CUDA, CPU], inputs)[0][0] == CUDA
    assert "no TensorRT" in caplog.text
    assert providers_for("cpu", [TENSORRT, CUDA, CPU], inputs) == [CPU]
