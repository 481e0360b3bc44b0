"""The container test's stored data and checker, without docker: the expectations still match the host pipeline and
the weights, and the checker really fails on wrong outputs (run_test.sh relies on both)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import check_output
import make_expected
import numpy as np
import onnxruntime as ort
import pytest
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SAMPLE = HERE / "input"


def host_paths(value, output: Path):
    """expected_results.json with /input and /output pointing at the host folders of a local run."""
    if isinstance(value, dict):
        return {k: host_paths(v, output) for k, v in value.items()}
    if isinstance(value, list):
        return [host_paths(v, output) for v in value]
    if isinstance(value, str):
        for container, host in (("/input", SAMPLE), ("/output", output)):
            if value == container or value.startswith(container + "/"):
                return str(host) + value[len(container) :]
    return value


@pytest.fixture(scope="module")
def host_run(tmp_path_factory) -> tuple[Path, Path]:
    """process.py on the stored sample (CPU), and expected_results.json rewritten to this run's host paths."""
    from process import main

    out = tmp_path_factory.mktemp("host_run") / "out"
    assert main(["--input", str(SAMPLE), "--output", str(out), "--device", "cpu", "--no-progress"]) == 0
    (out / "run_info.json").unlink()  # a local-mode extra; the container does not write it
    expected = host_paths(json.loads((HERE / "expected_results.json").read_text()), out)
    expected_file = out.parent / "expected_results.json"
    expected_file.write_text(json.dumps(expected))
    return out, expected_file


def ok_args(out: Path, expected_results: Path, expected_sct: Path = HERE / "expected_sct.mha") -> list[str]:
    return [
        "ok",
        "--input",
        str(SAMPLE),
        "--output",
        str(out),
        "--expected-results",
        str(expected_results),
        "--expected-sct",
        str(expected_sct),
        "--tolerance-hu",
        "1",
    ]


def test_stored_data_is_small_and_complete() -> None:
    files = [p for p in HERE.rglob("*") if p.is_file() and p.suffix in (".mha", ".json", ".onnx", ".sha256")]
    names = {p.relative_to(HERE).as_posix() for p in files}
    assert {
        "expected_results.json",
        "expected_sct.mha",
        "expected_weights.sha256",
        "smoke.onnx",
        "input/region.json",
    } <= names
    assert len(list((SAMPLE / "images" / "mri").iterdir())) == 1
    assert sum(p.stat().st_size for p in files) < 1_000_000


def test_expectations_match_the_shipped_weights() -> None:
    stored = (HERE / "expected_weights.sha256").read_text().strip()
    assert make_expected.weights_fingerprint(REPO / "model_weights") == stored, (
        "model_weights/ changed since the container test's expectations were made: "
        "rerun `python test/container/make_expected.py`"
    )


def test_host_pipeline_reproduces_the_expectations(host_run) -> None:
    out, expected_results = host_run
    assert check_output.main(ok_args(out, expected_results)) == 0


def failed_checks(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]


def test_checker_fails_on_a_wrong_voxel(host_run, tmp_path, capsys) -> None:
    out, expected_results = host_run
    reference = sitk.ReadImage(str(HERE / "expected_sct.mha"))
    array = sitk.GetArrayFromImage(reference)
    array[tuple(s // 2 for s in array.shape)] += 2
    shifted = sitk.GetImageFromArray(array)
    shifted.CopyInformation(reference)
    sitk.WriteImage(shifted, str(tmp_path / "shifted.mha"), True)
    assert check_output.main(ok_args(out, expected_results, tmp_path / "shifted.mha")) == 1
    failed = failed_checks(capsys)
    assert len(failed) == 1 and "within 1 HU" in failed[0] and "max |diff| 2.000" in failed[0]


def test_checker_fails_on_a_wrong_grid_or_extra_file(host_run, tmp_path, capsys) -> None:
    out, expected_results = host_run  # the copies keep results.json as written, so only the damage is reported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    sct_path = next((bad / "images" / "synthetic-ct").iterdir())
    image = sitk.ReadImage(str(sct_path))
    image.SetSpacing(tuple(s * 1.01 for s in image.GetSpacing()))
    sitk.WriteImage(image, str(sct_path), True)
    assert check_output.main(ok_args(bad, expected_results)) == 1
    failed = failed_checks(capsys)
    assert len(failed) == 1 and "spacing" in failed[0]

    extra = tmp_path / "extra"
    shutil.copytree(out, extra)
    (extra / "images" / "synthetic-ct" / "other.mha").write_bytes(b"")
    assert check_output.main(ok_args(extra, expected_results)) == 1
    failed = failed_checks(capsys)
    assert len(failed) == 1 and "exactly one image" in failed[0]


def test_failed_mode_catches_a_partial_output(tmp_path) -> None:
    mr_name = next((SAMPLE / "images" / "mri").iterdir()).name
    out = tmp_path / "out"
    (out / "images" / "synthetic-ct").mkdir(parents=True)
    entry = {"outputs": [], "inputs": [], "error_messages": [f"/input/images/mri/{mr_name}: cannot read MR"]}
    (out / "results.json").write_text(json.dumps([entry]))
    log = tmp_path / "log"
    log.write_text(f"12:00:00 ERROR process: /input/images/mri/{mr_name}: cannot read MR\n")
    args = ["failed", "--input", str(SAMPLE), "--output", str(out), "--mr-name", mr_name, "--log", str(log)]
    assert check_output.main(args) == 0
    (out / "images" / "synthetic-ct" / f".{mr_name}.partial").write_bytes(b"x")
    assert check_output.main(args) == 1


def test_smoke_model_computes_two_x_plus_one() -> None:
    session = ort.InferenceSession(str(HERE / "smoke.onnx"), providers=["CPUExecutionProvider"])
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(y, 2 * x + 1)
