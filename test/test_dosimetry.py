"""Dosimetric proxies: analytic WEPL cases, oblique beams, calibration tables, bone Dice, and the Dice/HD95 path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.dosimetry import CalibrationError, dosimetric_scores, load_calibration, wepl_map

SPACING = (3.0, 1.0, 1.0)  # z, y, x mm


def _calibration():
    return load_calibration()


def test_wepl_through_a_water_slab_equals_its_thickness():
    calibration = _calibration()
    hu = np.full((2, 40, 30), -1000.0, dtype=np.float32)
    hu[:, 10:30, :] = 0.0  # 20 mm of water along y
    rsp = calibration.to_rsp(hu)
    path = wepl_map(rsp, SPACING, 0.0)
    exit_depth = path[:, 35, :]  # beyond the slab: 20 mm of water plus ~0 of air
    assert np.allclose(exit_depth, 20.0, atol=0.1)
    back = wepl_map(rsp, SPACING, 180.0)
    assert np.allclose(back[:, 5, :], 20.0, atol=0.1)


def test_a_bone_insert_adds_rsp_times_its_thickness():
    calibration = _calibration()
    hu = np.full((1, 30, 60), 0.0, dtype=np.float32)
    hu[:, :, 20:30] = 1000.0  # 10 mm of bone along x
    rsp = calibration.to_rsp(hu)
    bone_rsp = float(calibration.to_rsp(np.array([1000.0]))[0])
    path = wepl_map(rsp, (3.0, 2.0, 1.0), 90.0)  # anisotropic in-plane spacing: exact traversal along x
    assert path[0, 0, 59] == pytest.approx(50.0 * 1.0 + 10.0 * bone_rsp - 0.5, abs=0.1)
    assert wepl_map(rsp, (3.0, 2.0, 1.0), 0.0)[0, 29, 25] == pytest.approx(bone_rsp * 2.0 * 29.5, abs=0.1)


def test_an_identical_pair_has_zero_error_everywhere():
    rng = np.random.default_rng(0)
    ct = rng.uniform(-1000, 1500, (3, 32, 32)).astype(np.float32)
    mask = np.zeros(ct.shape, np.uint8)
    mask[:, 4:28, 4:28] = 1
    scores = dosimetric_scores(ct, ct, mask, SPACING, beams=(0, 45, 90, 180, 270))
    for key, value in scores.items():
        if key.startswith(("wepl_", "range_error", "red_")):
            assert value == pytest.approx(0.0, abs=1e-4), key
        if key.startswith("bone_dice"):
            assert value == pytest.approx(1.0)


def test_an_oblique_beam_through_a_uniform_disc_matches_the_chord():
    """45 degrees across a water disc: the WEPL at the far edge is the chord length through the disc."""
    calibration = _calibration()
    n = 121
    yy, xx = np.mgrid[:n, :n] - n // 2
    disc = (yy**2 + xx**2) <= 40**2
    hu = np.where(disc, 0.0, -1000.0)[None].astype(np.float32)
    path = wepl_map(calibration.to_rsp(hu), (3.0, 1.0, 1.0), 45.0)
    # the beam at 45 degrees through the centre: the diameter (80 mm) at the exit point along the diagonal
    exit_point = (n // 2 + int(round(42 / np.sqrt(2))), n // 2 - int(round(42 / np.sqrt(2))))
    along = path[0][exit_point]
    across = wepl_map(calibration.to_rsp(hu), (3.0, 1.0, 1.0), 315.0)[0][n // 2 + 30, n // 2 + 30]
    assert max(along, across) == pytest.approx(80.0, abs=2.0)  # bilinear rotation: a voxel or two of blur
    with pytest.raises(ValueError, match="isotropic"):
        wepl_map(calibration.to_rsp(hu), (3.0, 1.0, 2.0), 45.0)


def test_a_denser_sct_shows_as_a_positive_range_error():
    ct = np.full((2, 40, 40), 0.0, np.float32)
    sct = ct + 100.0  # soft tissue too dense by 100 HU
    mask = np.ones(ct.shape, np.uint8)
    scores = dosimetric_scores(ct, sct, mask, SPACING)
    assert scores["range_error_pct"] == pytest.approx(9.0, abs=0.2)  # RSP 1.09 vs 1.00
    assert scores["red_me"] == pytest.approx(0.07, abs=1e-3) and scores["red_mae"] == pytest.approx(0.07, abs=1e-3)


def test_bone_dice_on_known_masks():
    ct = np.full((1, 20, 20), 0.0, np.float32)
    ct[0, :, :10] = 700.0  # 200 bone voxels
    sct = np.full_like(ct, 0.0)
    sct[0, :, 5:15] = 700.0  # 200 voxels, 100 shared
    scores = dosimetric_scores(ct, sct, np.ones(ct.shape, np.uint8), SPACING, beams=(0,), bone_hu=(250, 600, 900))
    assert scores["bone_dice_250hu"] == pytest.approx(0.5) and scores["bone_dice_600hu"] == pytest.approx(0.5)
    assert np.isnan(scores["bone_dice_900hu"])  # no bone at all above 900 HU in either


@pytest.mark.parametrize(
    "text, words",
    [
        ("hu,rsp,red\n0,1,1\n-100,0.9,0.9\n", "increase strictly"),
        ("hu,rsp,red\n0,1,1\n100,0.9,1.1\n", "never decrease"),
        ("hu,rsp\n0,1\n100,1.1\n", "columns"),
        ("hu,rsp,red\n0,one,1\n100,1.1,1.1\n", "number"),
    ],
)
def test_calibration_tables_are_checked(tmp_path, text, words):
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=words):
        load_calibration(path)


def test_the_default_calibration_is_monotone_and_water_is_one():
    calibration = _calibration()
    assert calibration.to_rsp(np.array([0.0]))[0] == pytest.approx(1.0)
    assert calibration.to_red(np.array([0.0]))[0] == pytest.approx(1.0)


def test_the_evaluator_writes_dosimetry_and_stand_in_dice_hd95_into_metrics_json(tmp_path):
    from evaluation.__main__ import main
    from sct_testing import write_paired_case

    case = write_paired_case(tmp_path / "gt", "TH", "1THA001")
    pred = tmp_path / "pred" / "images" / "synthetic-ct"
    pred.mkdir(parents=True)
    import SimpleITK as sitk

    image = sitk.ReadImage(str(case / "ct.mha"))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16) + 30, str(pred / "1THA001.mha"))
    assert (
        main(
            [
                "--pred",
                str(tmp_path / "pred"),
                "--gt",
                str(tmp_path / "gt"),
                "--out",
                str(tmp_path / "report"),
                "--dosimetry",
                "--segmenter",
                "threshold",
                "--no-progress",
            ]
        )
        == 0
    )
    document = json.loads((tmp_path / "report" / "metrics.json").read_text())
    (result,) = document["results"]
    for key in (
        "wepl_mae_mm",
        "wepl_p95_mm",
        "range_error_pct",
        "red_mae",
        "red_me",
        "bone_dice_250hu",
        "wepl_mae_mm_90deg",
        "dice",
        "hd95",
    ):
        assert key in result and result[key] is not None, key
    assert result["wepl_mae_mm"] > 0 and 0 < result["dice"] <= 1
    assert "wepl_mae_mm" in document["aggregates"] and "threshold" in document["segmentation_metrics"]
    assert (tmp_path / "report" / "cases" / "1THA001_wepl.png").is_file()
    header = (tmp_path / "report" / "metrics_per_case.csv").read_text().splitlines()[0]
    assert "range_error_pct" in header and "dice" in header
