"""The sCT sits on the input grid voxel for voxel, whatever the direction, spacing and size."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import process
from sct_testing import PERMUTED, ROTATED, identity_model_entry, onnx_model, read_array, write_case, write_manifest


def expected_hu(mr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What the identity model must give: minmax over the mask -> [0, 1000] HU, -1000 outside."""
    inside = mask > 0
    low, high = mr[inside].min(), mr[inside].max()
    hu = (np.clip(mr, low, high) - low) / (high - low) * 1000.0
    return np.where(inside, hu, -1000.0)


def run(tmp_path, entry, behaviour="centre", **geometry):
    onnx_model(tmp_path / "weights" / "gen.onnx", context=entry["context_slices"], behaviour=behaviour)
    manifest = write_manifest(tmp_path / "weights", {"gen": entry})
    mr_path, mask_path = write_case(tmp_path / "in", **geometry)
    code = process.main(
        [
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--manifest",
            str(manifest),
            "--no-progress",
        ]
    )
    assert code == 0
    return mr_path, mask_path, tmp_path / "out" / "images" / "synthetic-ct" / mr_path.name


@pytest.mark.parametrize("direction", [ROTATED, PERMUTED, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)])
def test_round_trip_is_voxel_exact_without_resampling(tmp_path, direction):
    mr_path, mask_path, out = run(tmp_path, identity_model_entry(context=3), direction=direction)
    source, written = sitk.ReadImage(str(mr_path)), sitk.ReadImage(str(out))
    assert written.GetSize() == source.GetSize()
    assert written.GetSpacing() == source.GetSpacing()
    assert written.GetOrigin() == source.GetOrigin()
    assert written.GetDirection() == source.GetDirection()
    want = expected_hu(read_array(mr_path).astype(np.float64), read_array(mask_path))
    np.testing.assert_allclose(sitk.GetArrayFromImage(written), want, atol=0.05)


def test_round_trip_with_inplane_resampling_and_padding(tmp_path):
    entry = identity_model_entry(context=1, spacing=[0.5, 0.5], divisible_by=16)
    mr_path, mask_path, out = run(tmp_path, entry, shape=(9, 41, 33), direction=ROTATED)
    source, written = sitk.ReadImage(str(mr_path)), sitk.ReadImage(str(out))
    assert (written.GetSize(), written.GetSpacing(), written.GetOrigin(), written.GetDirection()) == (
        source.GetSize(),
        source.GetSpacing(),
        source.GetOrigin(),
        source.GetDirection(),
    )
    mask = read_array(mask_path)
    got = sitk.GetArrayFromImage(written)
    want = expected_hu(read_array(mr_path).astype(np.float64), mask)
    assert np.all(got[mask == 0] == -1000)
    # Linear interpolation there and back smooths the 5-unit MR noise and blurs the body edge a little.
    interior = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(mask), [2, 2, 0])) > 0
    error = np.abs(got - want)[interior]
    assert np.median(error) < 6.0 and error.max() < 40.0


def test_network_sees_the_same_anatomy_whatever_the_storage_order(tmp_path):
    """A model that is not flip-symmetric gives the same physical sCT for two storage orders of one MR."""
    entry = identity_model_entry(context=1)
    onnx_model(tmp_path / "weights" / "gen.onnx", behaviour="shift")
    manifest = write_manifest(tmp_path / "weights", {"gen": entry})
    mr_path, mask_path = write_case(tmp_path / "a", direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    (tmp_path / "b" / "images" / "mri").mkdir(parents=True)
    (tmp_path / "b" / "images" / "body").mkdir(parents=True)
    (tmp_path / "b" / "region.json").write_text('"Thorax"')
    for source, kind in ((mr_path, "mri"), (mask_path, "body")):
        reordered = sitk.PermuteAxes(sitk.Flip(sitk.ReadImage(str(source)), [True, False, False]), [1, 0, 2])
        sitk.WriteImage(reordered, str(tmp_path / "b" / "images" / kind / source.name))
    for name in ("a", "b"):
        assert (
            process.main(
                [
                    "--input",
                    str(tmp_path / name),
                    "--output",
                    str(tmp_path / f"out_{name}"),
                    "--manifest",
                    str(manifest),
                    "--no-progress",
                ]
            )
            == 0
        )
    out_a = sitk.ReadImage(str(tmp_path / "out_a" / "images" / "synthetic-ct" / mr_path.name))
    out_b = sitk.ReadImage(str(tmp_path / "out_b" / "images" / "synthetic-ct" / mr_path.name))
    assert out_b.GetDirection() != out_a.GetDirection()
    back = sitk.Resample(out_b, out_a, sitk.Transform(), sitk.sitkNearestNeighbor, -2000.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(out_a), atol=1e-3)
