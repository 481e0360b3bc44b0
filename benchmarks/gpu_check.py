"""The first-GPU check: is CUDA really used, do GPU and CPU agree, how fast is a case. One JSON line and a report.

    python benchmarks/gpu_check.py --out runs/gpu_check            # on a GPU machine: both halves (< 10 minutes)
    python benchmarks/gpu_check.py --cpu-only --shape 8,96,96      # the CPU half alone (CI-safe, a minute)

Steps: (1) which ONNX Runtime providers exist and whether the CUDA provider loads a model; (2) the sample case
(test/container/input) and a 400 x 400 x 100 synthetic case through process.py with each model (the shipped
one-step l1, its float16 copy l1_fp16, ldm at N = 10 and 20): seconds per case and per slice, on the CPU and, when
CUDA loads, on the GPU; (3) GPU vs CPU parity of the sCTs in HU (max and mean |difference|), and l1_fp16 against
float32 l1 on the CPU; (4) peak GPU memory of each GPU run, sampled in a background thread while it runs (NVML
through pynvml when installed, else nvidia-smi; none without either), next to the idle memory before the runs.
Nothing is asserted: this measures, and it writes report.json and report.md into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_pipeline import make_case  # noqa: E402

from benchmarks.process_runner import run_process  # noqa: E402

LOG = logging.getLogger("gpu_check")


def cuda_status() -> dict:
    import onnxruntime as ort

    from engine.runtime import CUDA, DeviceError, create_session

    status = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(), "cuda_loads": False}
    smoke = REPO / "test" / "container" / "smoke.onnx"
    try:
        session = create_session(smoke, "cuda")
        status["cuda_loads"] = CUDA in session.get_providers()
    except (DeviceError, OSError) as err:
        status["cuda_error"] = str(err)
    return status


def check_manifest(work: Path) -> Path:
    """A copy of the shipped manifest in `work` (files named by absolute path), with `l1_fp16`, a float16 copy of
    the shipped one-step generator (training/manifest_entries.add_fp16: its parity is checked on the way)."""
    from training.manifest_entries import add_fp16

    shipped = REPO / "model_weights" / "manifest.json"
    data = json.loads(shipped.read_text())
    for entry in data["models"].values():
        for item in (entry.get("files") or {}).values():
            item["path"] = str((shipped.parent / item["path"]).resolve())
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps(data))
    add_fp16(manifest, "l1", "l1_fp16", [])
    return manifest


def run_case(folder: Path, out: Path, model: str, device: str, manifest: Path, ddim_steps: int | None = None) -> dict:
    """process.py on one case folder; seconds (new process, read to write) and the sCT array."""
    if ddim_steps is not None:  # a temporary manifest with the LDM's sampler at N steps, naming the same files
        data = json.loads(manifest.read_text())
        data["models"]["ldm"].setdefault("sampler", {})["ddim_steps"] = ddim_steps
        manifest = out.parent / f"manifest_ldm{ddim_steps}.json"
        manifest.write_text(json.dumps(data))
    done = run_process(
        [
            "--input",
            folder,
            "--output",
            out,
            "--model",
            model,
            "--device",
            device,
            "--manifest",
            manifest,
            "--no-progress",
        ]
    )
    seconds = done.seconds
    record = {
        "model": model if ddim_steps is None else f"ldm N={ddim_steps}",
        "device": device,
        "exit": done.returncode,
        "seconds": round(seconds, 2),
    }
    sct = sorted((out / "images" / "synthetic-ct").glob("*.mha"))
    if done.returncode == 0 and sct:
        record["array"] = sitk.GetArrayFromImage(sitk.ReadImage(str(sct[0]))).astype(np.float32)
        record["seconds_per_slice"] = round(seconds / record["array"].shape[0], 4)
    else:
        record["error"] = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return record


def nvidia_smi_reader() -> Callable[[], float | None] | None:
    """Used GPU memory in MiB (the fullest device) from nvidia-smi, or None when it is not installed."""
    if shutil.which("nvidia-smi") is None:
        return None

    def read() -> float | None:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        try:
            return max(float(value) for value in done.stdout.split())
        except ValueError:  # no number (no device, an error message): no sample
            return None

    return read


def nvml_reader() -> Callable[[], float | None] | None:
    """Used GPU memory in MiB (the fullest device) through NVML (pynvml), or None when pynvml or NVML is absent."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # noqa: BLE001 - no pynvml, no driver: the caller falls back to nvidia-smi
        return None
    if not handles:
        return None
    return lambda: max(pynvml.nvmlDeviceGetMemoryInfo(handle).used for handle in handles) / 2**20


class GpuMemorySampler:
    """The peak of the GPU's used memory while a block runs, sampled by a background thread every `interval_s`.

    Reading once after the runs (as before) saw idle memory: ONNX Runtime's arenas belong to the process that ran
    the case and are gone when it exits. `read` returns MiB or None (no sample); without a reader, no peak."""

    def __init__(self, read: Callable[[], float | None] | None, interval_s: float = 0.1) -> None:
        self.read = read
        self.interval_s = interval_s
        self.peak_mb: float | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        try:
            value = self.read()
        except Exception as err:  # noqa: BLE001 - a failed reading is a missing sample, never a failed check
            LOG.debug("GPU memory sample failed: %s", err)
            return
        if value is not None:
            self.samples += 1
            self.peak_mb = value if self.peak_mb is None else max(self.peak_mb, value)

    def _loop(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> GpuMemorySampler:
        if self.read is not None:
            self._thread = threading.Thread(target=self._loop, name="gpu-memory-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()  # and once more at the end


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--shape", default="100,400,400", help="z,y,x of the synthetic case (default: %(default)s)")
    parser.add_argument("--cpu-only", action="store_true", help="only the CPU half (no GPU needed)")
    parser.add_argument(
        "--models",
        default="l1,l1_fp16,ldm10,ldm20",
        help="manifest entries (l1_fp16: a float16 copy of l1, compared with l1 on the CPU) and ldm<N> "
        "(default: %(default)s)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"cuda": cuda_status()}
    devices = ["cpu"] + (["cuda"] if report["cuda"]["cuda_loads"] and not args.cpu_only else [])
    read_gpu_memory = (nvml_reader() or nvidia_smi_reader()) if "cuda" in devices else None
    with GpuMemorySampler(read_gpu_memory) as idle:
        pass
    report["idle_gpu_memory_mb"] = idle.peak_mb
    shape = tuple(int(v) for v in args.shape.split(","))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        synthetic = Path(tmp) / "synthetic"
        make_case(synthetic, shape)
        manifest = check_manifest(Path(tmp))
        cases = {"sample": REPO / "test" / "container" / "input", f"synthetic {args.shape}": synthetic}
        runs = []
        fp32_on_cpu: dict = {}  # case -> the CPU run of the float32 l1 (the float16 copy's reference)
        for case_name, folder in cases.items():
            for model in [m for m in args.models.split(",") if m]:
                steps = int(model[3:]) if model.startswith("ldm") else None
                per_device = {}
                for device in devices:
                    out = Path(tmp) / f"{case_name.split()[0]}_{model}_{device}"
                    with GpuMemorySampler(read_gpu_memory if device == "cuda" else None) as sampler:
                        record = run_case(folder, out, "ldm" if steps else model, device, manifest, steps)
                    if device == "cuda":
                        record["peak_gpu_memory_mb"] = sampler.peak_mb
                    record["case"] = case_name
                    per_device[device] = record
                    LOG.info("%s %s on %s: %s s", case_name, record["model"], device, record["seconds"])
                # parity: GPU vs CPU of the same model; a float16 copy against its float32 source on the CPU
                reference = fp32_on_cpu.get(case_name) if model.endswith("_fp16") else per_device.get("cpu")
                for device, record in per_device.items():
                    if model.endswith("_fp16") or device == "cuda":
                        if reference is not None and "array" in reference and "array" in record:
                            difference = np.abs(record["array"] - reference["array"])
                            record["parity_hu"] = {"max": float(difference.max()), "mean": float(difference.mean())}
                if model == "l1":
                    fp32_on_cpu[case_name] = per_device["cpu"]
                for record in per_device.values():
                    runs.append(record)
        for record in runs:
            record.pop("array", None)
        report["runs"] = runs
    peaks = [r["peak_gpu_memory_mb"] for r in report["runs"] if r.get("peak_gpu_memory_mb") is not None]
    report["peak_gpu_memory_mb"] = max(peaks) if peaks else None
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| case | model | device | exit | s/case | s/slice | GPU-CPU max / mean HU | peak GPU MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        parity = r.get("parity_hu")
        shown = "" if parity is None else "{:.2f} / {:.3f}".format(parity["max"], parity["mean"])
        lines.append(
            f"| {r['case']} | {r['model']} | {r['device']} | {r['exit']} | {r['seconds']} | "
            f"{r.get('seconds_per_slice', '')} | {shown} | {r.get('peak_gpu_memory_mb') or ''} |"
        )
    lines.append(f"\nGPU memory before the runs (idle): {report['idle_gpu_memory_mb']} MiB")
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(
        json.dumps(
            {
                "cuda_loads": report["cuda"]["cuda_loads"],
                "devices": devices,
                "runs": [{k: r[k] for k in ("case", "model", "device", "exit", "seconds")} for r in runs],
                "peak_gpu_memory_mb": report["peak_gpu_memory_mb"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
