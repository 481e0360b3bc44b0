"""Tests of the evaluator: official metric values, pairing of predictions with ground truth, the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import uniform_filter
from scipy.signal import fftconvolve

from evaluation import metrics, segmentation
from evaluation.metrics import score_case
from evaluation.pairing import find_ground_truth, pair_cases, region_from_id, resolve_case_id
from evaluation.report import aggregate

REPO = Path(__file__).resolve().parents[1]
# Cases scored by the official SynthRAD2025 code, copied from ../shared/reference_metrics so the test runs anywhere.
REFERENCE = Path(__file__).resolve().parent / "data" / "reference_metrics"
REFERENCE_CASES = (
    "small_float_outliers",
    "medium_int16_holes",
    "tall_rotated_outside_noise",
    "perfect_prediction",
    "blurred_shifted_bias",
)


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


# ---------------------------------------------------------------- metrics against the official code's values


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_reference_case_matches_official_values(case: str) -> None:
    expected = json.loads((REFERENCE / "expected.json").read_text())[case]
    folder = REFERENCE / case
    scores = score_case(_read(folder / "ct.mha"), _read(folder / "sct.mha"), _read(folder / "mask.mha"))
    assert scores["mae"] == pytest.approx(expected["mae"], rel=1e-6, abs=1e-12)
    assert scores["ms_ssim"] == pytest.approx(expected["ms_ssim"], rel=1e-6)
    if expected["psnr_is_infinite"]:
        assert scores["psnr"] == math.inf
    else:
        assert scores["psnr"] == pytest.approx(expected["psnr"], rel=1e-6)


def test_box_downsample_equals_fftconvolve_same_strided() -> None:
    rng = np.random.default_rng(1)
    for shape in [(9, 8, 7), (10, 11, 12)]:
        image = rng.uniform(0, 4095, shape)
        expected = fftconvolve(image, np.ones((2, 2, 2)) / 8, mode="same")[::2, ::2, ::2]
        np.testing.assert_allclose(metrics._box_downsample(image), expected, rtol=0, atol=1e-9)


def test_uniform_window_is_scipy_uniform_filter_in_xyz_axis_order() -> None:
    image = np.random.default_rng(2).uniform(0, 4095, (11, 13, 9)).astype(np.float32)
    np.testing.assert_array_equal(metrics._uniform(image), uniform_filter(image.T, 7).T)


def test_metric_semantics_on_a_small_case() -> None:
    rng = np.random.default_rng(3)
    gt = rng.integers(-1000, 1500, (8, 20, 20)).astype(np.int16)
    mask = np.zeros(gt.shape, np.uint8)
    mask[2:6, 5:15, 5:15] = 1
    pred = gt.astype(np.float32)
    pred[mask == 0] = 9999  # outside the mask: must not count
    pred[3, 7, 7] = gt[3, 7, 7] + 5000.0  # above 3071: full cost in MAE, clipped in PSNR
    s = score_case(gt, pred, mask)
    n = mask.sum()
    assert s["mae"] == pytest.approx(5000.0 / n)
    clipped_err = 3071.0 - gt[3, 7, 7]
    assert s["psnr"] == pytest.approx(10 * np.log10(4095.0**2 / (clipped_err**2 / n)))
    assert 0.0 < s["ms_ssim"] < 1.0


def test_score_case_rejects_bad_inputs() -> None:
    a = np.zeros((4, 5, 6), np.int16)
    with pytest.raises(ValueError, match="shape mismatch"):
        score_case(a, np.zeros((4, 5, 7), np.int16), np.ones((4, 5, 6), np.uint8))
    with pytest.raises(ValueError, match="mask is empty"):
        score_case(a, a, np.zeros_like(a, np.uint8))


def test_aggregate_keys_and_non_finite_values() -> None:
    agg = aggregate([1.0, 2.0, 3.0, math.inf])
    assert agg["count"] == 3 and agg["not_finite"] == 1
    assert agg["mean"] == 2.0 and agg["std"] == pytest.approx(1.0)
    assert (agg["min"], agg["25pc"], agg["50pc"], agg["75pc"], agg["max"]) == (1.0, 1.5, 2.0, 2.5, 3.0)


# ---------------------------------------------------------------- pairing


def _write(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 3.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), True)


def _tiny(path: Path) -> None:
    _write(path, np.zeros((2, 3, 3), np.int16))


def test_region_from_id() -> None:
    assert region_from_id("1ABA005") == "AB"
    assert region_from_id("1HNC035") == "HN"
    assert region_from_id("1BA001") == "BRAIN"
    assert region_from_id("1PA001") == "PELVIS"
    assert region_from_id("patient7") == "unknown"


def test_resolve_case_id() -> None:
    ids = {"1HNA001", "1ABA002"}
    assert resolve_case_id("1HNA001", ids) == ("1HNA001", "exact")
    assert resolve_case_id("sct_1aba002", ids)[0] == "1ABA002"
    assert resolve_case_id("x1HNA001y", ids)[0] == "1HNA001"
    assert resolve_case_id("1HNA001_1ABA002", ids)[0] is None
    assert resolve_case_id("9ZZZ999", ids) == (None, "no ground-truth case with this ID")


def test_pairing_product_released_and_flat_layouts(tmp_path: Path) -> None:
    gt = tmp_path / "data"
    for region, cid in [("HN", "1HNA001"), ("AB", "1ABA002"), ("TH", "1THB003"), ("TH", "1THB004")]:
        for name in ("ct", "mask", "mr"):
            _tiny(gt / "Task1" / region / cid / f"{name}.mha")
    _tiny(gt / "Task1" / "AB" / "1ABA009" / "ct.mha")  # no mask: reported, not used

    pred = tmp_path / "out"
    _tiny(pred / "images" / "synthetic-ct" / "1HNA001.mha")  # product output named by ID
    _tiny(pred / "images" / "synthetic-ct" / "scan_b.mha")  # product output named after a template MR
    _tiny(pred / "images" / "synthetic-ct" / "9ZZZ999.mha")  # no such case: unpaired
    (pred / "results.json").write_text(
        json.dumps(
            [
                {
                    "outputs": [{"type": "metaio_image", "filename": "/output/images/synthetic-ct/scan_b.mha"}],
                    "inputs": [
                        {"type": "metaio_image", "filename": "/input/Task1/AB/1ABA002/mr.mha"},
                        {"type": "metaio_image", "filename": "/input/Task1/AB/1ABA002/mask.mha"},
                        {"type": "String", "filename": "/input/region.json"},
                    ],
                    "error_messages": [],
                }
            ]
        )
    )
    _tiny(pred / "1THB003" / "sct.mha")  # released layout
    _tiny(pred / "1THB003.mha")  # flat duplicate of the same case: reported, the first one wins

    pairing = pair_cases(pred, gt)
    by_id = {p.case_id: p for p in pairing.pairs}
    assert sorted(by_id) == ["1ABA002", "1HNA001", "1THB003"]
    assert by_id["1ABA002"].prediction.name == "scan_b.mha"
    assert by_id["1ABA002"].region == "AB" and by_id["1HNA001"].region == "HN"
    assert by_id["1THB003"].prediction == (pred / "1THB003" / "sct.mha").resolve()
    assert by_id["1HNA001"].mr is not None
    unpaired = {Path(u["path"]).name: u["reason"] for u in pairing.unpaired_predictions}
    assert unpaired["9ZZZ999.mha"] == "no ground-truth case with this ID"
    assert "1THB003" in unpaired["1THB003.mha"]
    assert [g["case_id"] for g in pairing.gt_without_prediction] == ["1THB004"]
    assert [g["case_id"] for g in pairing.gt_problems] == ["1ABA009"]
    report = pairing.report()
    assert report["n_pairs"] == 3 and len(report["unpaired_predictions"]) == 2


def test_ground_truth_as_region_folders_or_case_folders(tmp_path: Path) -> None:
    for name in ("ct", "mask"):
        _tiny(tmp_path / "regions" / "pelvis" / "1PA001" / f"{name}.nii.gz")
        _tiny(tmp_path / "cases" / "1HNC035" / f"{name}.mha")
    cases, problems = find_ground_truth(tmp_path / "regions")
    assert cases["1PA001"].region == "PELVIS" and not problems
    cases, _ = find_ground_truth(tmp_path / "cases")
    assert cases["1HNC035"].region == "HN"  # no region folder: the code inside the ID


# ---------------------------------------------------------------- segmentation-metric detection


def test_segmentation_metrics_need_package_and_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "weights"))
    monkeypatch.setattr(segmentation.importlib.util, "find_spec", lambda name: None)
    ok, reason = segmentation.availability()
    assert not ok and "totalsegmentator package is not installed" in reason

    monkeypatch.setattr(segmentation.importlib.util, "find_spec", lambda name: object())
    ok, reason = segmentation.availability()
    assert not ok and "weights not found" in reason and str(tmp_path / "weights") in reason

    (tmp_path / "weights" / segmentation.TOTAL_FAST_MODEL).mkdir(parents=True)
    ok, reason = segmentation.availability()
    assert ok and segmentation.TOTAL_FAST_MODEL in reason


# ---------------------------------------------------------------- CLI end to end


def _phantom_case(rng: np.random.Generator, shape=(10, 36, 40)) -> tuple[np.ndarray, ...]:
    nz, ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    body = ((yy - ny / 2) / (0.4 * ny)) ** 2 + ((xx - nx / 2) / (0.4 * nx)) ** 2 < 1
    ct = np.full(shape, -1000, np.int16)
    ct[:, body] = 40
    ct[:, ny // 2 - 3 : ny // 2 + 3, nx // 2 - 3 : nx // 2 + 3] = 1200
    ct = (ct + rng.normal(0, 10, shape)).astype(np.int16)
    mask = np.broadcast_to(body, shape).astype(np.uint8)
    mr = np.where(mask > 0, 300 - ct.clip(-200, 300) // 2, 0).astype(np.int16)
    return ct, mask, mr


def test_cli_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gt, pred = tmp_path / "data", tmp_path / "pred"
    arrays = {}
    for region, cid in [("HN", "1HNA001"), ("AB", "1ABA002")]:
        ct, mask, mr = _phantom_case(rng)
        for name, arr in (("ct", ct), ("mask", mask), ("mr", mr)):
            _write(gt / "Task1" / region / cid / f"{name}.mha", arr)
        arrays[cid] = (ct, mask)
    # one imperfect prediction (float32, blurred and offset) and one perfect one, in the flat layout
    ct, mask = arrays["1HNA001"]
    sct = (uniform_filter(ct.astype(np.float32), 3) + 25).astype(np.float32)
    _write(pred / "1HNA001.mha", sct)
    _write(pred / "1ABA002.mha", arrays["1ABA002"][0])
    _write(pred / "unknown_case.mha", sct)
    out = tmp_path / "report"

    proc = subprocess.run(
        [sys.executable, "-m", "evaluation", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "segmentation metrics (Dice, HD95) skipped" in proc.stderr
    assert "unknown_case.mha" in proc.stderr

    doc = json.loads((out / "metrics.json").read_text())
    assert doc["segmentation_metrics"].startswith("skipped: ")
    results = {r["case_id"]: r for r in doc["results"]}
    assert sorted(results) == ["1ABA002", "1HNA001"]
    assert results["1HNA001"]["region"] == "HN" and results["1ABA002"]["region"] == "AB"
    expected = score_case(ct, sct, mask)
    for metric in ("mae", "psnr", "ms_ssim"):
        assert results["1HNA001"][metric] == pytest.approx(expected[metric], rel=1e-12)
    perfect = results["1ABA002"]
    assert perfect["mae"] == 0.0 and perfect["ms_ssim"] == 1.0
    assert perfect["psnr"] is None and perfect["psnr_is_infinite"] is True
    for metric in ("mae", "psnr", "ms_ssim"):
        assert set(doc["aggregates"][metric]) >= {"mean", "std", "min", "max", "25pc", "50pc", "75pc", "count"}
    assert doc["aggregates"]["mae"]["count"] == 2
    assert doc["aggregates"]["psnr"]["count"] == 1 and doc["aggregates"]["psnr"]["not_finite"] == 1
    assert doc["aggregates"]["mae"]["mean"] == pytest.approx(expected["mae"] / 2)
    assert set(doc["regions"]) == {"AB", "HN"} and doc["regions"]["HN"]["n_cases"] == 1
    assert [u["name"] for u in doc["pairing"]["unpaired_predictions"]] == ["unknown_case"]

    with (out / "metrics_per_case.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["case_id"] for r in rows} == {"1ABA002", "1HNA001"}
    assert float(next(r for r in rows if r["case_id"] == "1HNA001")["mae"]) == pytest.approx(expected["mae"])
    with (out / "metrics_per_region.csv").open() as f:
        region_rows = list(csv.DictReader(f))
    assert {(r["region"], r["metric"]) for r in region_rows} >= {("HN", "mae"), ("AB", "ms_ssim"), ("ALL", "psnr")}
    for png in (out / "boxplots.png", out / "cases" / "1HNA001.png", out / "cases" / "1ABA002.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_fails_clearly_on_shape_mismatch(tmp_path: Path) -> None:
    from evaluation.__main__ import main

    ct, mask, _ = _phantom_case(np.random.default_rng(1))
    for name, arr in (("ct", ct), ("mask", mask)):
        _write(tmp_path / "gt" / "1THA001" / f"{name}.mha", arr)
    _write(tmp_path / "pred" / "1THA001.mha", ct[:-1])
    status = main(
        [
            "--pred",
            str(tmp_path / "pred"),
            "--gt",
            str(tmp_path / "gt"),
            "--out",
            str(tmp_path / "r"),
            "--no-plots",
            "--no-progress",
        ]
    )
    assert status == 1
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["results"] == [] and "differs from the ground truth" in doc["pairing"]["failed"][0]["reason"]


def test_the_evaluator_keeps_the_challenge_window_that_the_models_use():
    import modelspec
    from evaluation import metrics

    assert (metrics.HU_MIN, metrics.HU_MAX) == (modelspec.HU_MIN, modelspec.HU_MAX) == (-1024.0, 3071.0)
    assert metrics.DATA_RANGE == 4095.0
