"""process.py's contract: container and local modes, results.json, and every bad input."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from benchmarks.process_runner import run_process
from engine.manifest import DEFAULT_MANIFEST, load_manifest
from sct_testing import body_phantom, read_array, write_case, write_volume

REPO = Path(__file__).resolve().parents[1]


def results_of(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())


def test_container_mode_follows_the_template_contract(tmp_path, monkeypatch):
    inp, out = tmp_path / "input", tmp_path / "output"
    mr_path, mask_path = write_case(inp, name="1HNA001.mha", region="Head and Neck")
    monkeypatch.setattr(process, "CONTAINER_INPUT", inp)
    monkeypatch.setattr(process, "CONTAINER_OUTPUT", out)
    assert process.main(["--no-progress"]) == 0
    sct = out / "images" / "synthetic-ct" / "1HNA001.mha"
    assert [p.name for p in (out / "images" / "synthetic-ct").iterdir()] == ["1HNA001.mha"]
    assert results_of(out) == [
        {
            "outputs": [{"type": "metaio_image", "filename": str(sct)}],
            "inputs": [
                {"type": "metaio_image", "filename": str(mr_path)},
                {"type": "metaio_image", "filename": str(mask_path)},
                {"type": "String", "filename": str(inp / "region.json")},
            ],
            "error_messages": [],
            "model": load_manifest(DEFAULT_MANIFEST).route("Head and Neck").primary.name,  # the shipped default
        }
    ]
    assert not (out / "run_info.json").exists()
    written, mask = sitk.ReadImage(str(sct)), read_array(mask_path)
    assert written.GetPixelID() == sitk.sitkInt16
    values = sitk.GetArrayFromImage(written)
    assert np.all(values[mask == 0] == -1000) and values.min() >= -1024 and values.max() <= 3071


def test_water_model_is_zero_inside_the_body(tmp_path):
    mr_path, mask_path = write_case(tmp_path / "in")
    assert (
        process.main(
            ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"]
        )
        == 0
    )
    values, mask = read_array(tmp_path / "out" / "images" / "synthetic-ct" / mr_path.name), read_array(mask_path)
    assert np.all(values[mask > 0] == 0) and np.all(values[mask == 0] == -1000)


def test_released_layout_takes_the_region_from_the_folder(tmp_path):
    mr, mask = body_phantom()
    for region, case in (("TH", "1THB012"), ("AB", "1ABA005"), ("brain", "1BA001")):
        write_volume(tmp_path / "Task1" / region / case / "mr.mha", mr)
        write_volume(tmp_path / "Task1" / region / case / "mask.mha", mask)
    assert process.main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--no-progress"]) == 0
    names = sorted(p.name for p in (tmp_path / "out" / "images" / "synthetic-ct").iterdir())
    assert names == ["1ABA005.mha", "1BA001.mha", "1THB012.mha"]
    results = results_of(tmp_path / "out")
    assert [r["inputs"][2] for r in results] == [{"type": "String", "value": v} for v in ("AB", "BRAIN", "TH")]
    info = json.loads((tmp_path / "out" / "run_info.json").read_text())
    assert [c["case_id"] for c in info["cases"]] == ["1ABA005", "1BA001", "1THB012"]
    # what a user reproducing a run needs from run_info.json: which model ran per case, the manifest, the versions
    assert all(c["ok"] and c["model"] == r["model"] for c, r in zip(info["cases"], results))
    assert Path(info["manifest"]).resolve() == DEFAULT_MANIFEST.resolve()
    assert set(info["versions"]) >= {"numpy", "SimpleITK", "onnxruntime"} and info["python"].count(".") == 2
    assert info["arguments"]["input"] == str(tmp_path) and info["arguments"]["samples"] == 1


def test_single_file_mode(tmp_path):
    mr_path, mask_path = write_case(tmp_path / "in")
    out = tmp_path / "sct" / "case1_sct.mha"
    assert (
        process.main(
            ["--mr", str(mr_path), "--mask", str(mask_path), "--region", "ab", "--out", str(out), "--no-progress"]
        )
        == 0
    )
    assert read_array(out).shape == read_array(mr_path).shape
    assert results_of(out.parent)[0]["outputs"][0]["filename"] == str(out)


def test_cli_runs_as_a_script_and_documents_every_mode(tmp_path):
    help_text = run_process(["--help"], check=True).stdout
    for flag in (
        "--input",
        "--output",
        "--mr",
        "--mask",
        "--region",
        "--out",
        "--model",
        "--device",
        "--batch-size",
        "--samples",
        "Head and Neck",
    ):
        assert flag in help_text
    write_case(tmp_path / "in")
    run = run_process(["--input", tmp_path / "in", "--output", tmp_path / "out"])
    assert run.returncode == 0, run.stderr
    assert "case1: done in" in run.stderr


def test_masks_pair_by_name_not_by_sort_order(tmp_path):
    """An extra mask sorts between the two real ones: pairing the sorted lists would give b the wrong mask."""
    mr_a, mask_a = body_phantom(seed=1)
    mr_b, mask_b = body_phantom(shape=(7, 25, 31), seed=2)
    mask_b[:, :, :8] = 0  # b's own mask differs from any ellipse: its output shows which mask it got
    write_volume(tmp_path / "in" / "images" / "mri" / "a.mha", mr_a)
    write_volume(tmp_path / "in" / "images" / "mri" / "b.mha", mr_b)
    write_volume(tmp_path / "in" / "images" / "body" / "a.mha", mask_a)
    write_volume(tmp_path / "in" / "images" / "body" / "aa.mha", body_phantom(shape=(7, 25, 31), seed=3)[1])
    write_volume(tmp_path / "in" / "images" / "body" / "b.mha", mask_b)
    (tmp_path / "in" / "region.json").write_text('"Pelvis"')
    assert (
        process.main(
            ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress", "--model", "water"]
        )
        == 0
    )
    for name, mask in (("a", mask_a), ("b", mask_b)):
        sct = read_array(tmp_path / "out" / "images" / "synthetic-ct" / f"{name}.mha")
        assert np.array_equal(sct != -1000, mask > 0), name  # water: 0 HU exactly where its own mask is


# --- bad input: one-line error naming the file, in the log and results.json, no output file ---------------------


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nthis is not an image at all\n")


def _vector(path: Path) -> None:
    array = np.zeros((11, 37, 29, 3), dtype=np.float32)
    image = sitk.GetImageFromArray(array, isVector=True)
    sitk.WriteImage(image, str(path))


def _two_d(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((37, 29), dtype=np.int16)), str(path))


def _four_d(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 11, 37, 29), dtype=np.int16), isVector=False), str(path))


def _nan(path: Path) -> None:
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[5, 18, 14] = np.nan
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))


def _empty(path: Path) -> None:
    image = sitk.ReadImage(str(path))
    sitk.WriteImage(image * 0, str(path))


def _elsewhere(path: Path) -> None:
    image = sitk.ReadImage(str(path))
    image.SetOrigin((5000.0, 5000.0, 5000.0))
    sitk.WriteImage(image, str(path))


BAD_INPUTS = {
    # name: (which file, how to break it, words the error must contain)
    "missing mask": ("mask", lambda p: p.unlink(), "mask missing"),
    "mask on another grid": ("mask", _elsewhere, "does not overlap"),
    "empty mask": ("mask", _empty, "mask is empty"),
    "corrupt file": ("mr", _garbage, "cannot read MR"),
    "truncated file": ("mr", _truncated, "cannot read MR"),
    "2-D image": ("mr", _two_d, "2-D"),
    "4-D image": ("mr", _four_d, "4-D"),
    "NaN voxels": ("mr", _nan, "NaN/inf"),
    "vector image": ("mr", _vector, "vector image"),
    "unknown region": ("region", lambda p: p.write_text('"Knee"'), "unknown region"),
    "missing region": ("region", lambda p: p.unlink(), "region file missing"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_fails_cleanly(tmp_path, caplog, name):
    which, break_it, words = BAD_INPUTS[name]
    inp = tmp_path / "in"
    mr_path, mask_path = write_case(inp)
    target = {"mr": mr_path, "mask": mask_path, "region": inp / "region.json"}[which]
    break_it(target)
    with caplog.at_level(logging.ERROR):
        code = process.main(["--input", str(inp), "--output", str(tmp_path / "out"), "--no-progress"])
    assert code == 1
    (entry,) = results_of(tmp_path / "out")
    assert entry["outputs"] == []
    (message,) = entry["error_messages"]
    assert words in message and "\n" not in message
    assert str(target) in message
    assert message in caplog.text
    sct_dir = tmp_path / "out" / "images" / "synthetic-ct"
    assert not sct_dir.exists() or not any(sct_dir.iterdir())
    if name == "unknown region":
        assert "Head and Neck" in message and "Thorax" in message


def test_unwritable_output_folder(tmp_path):
    write_case(tmp_path / "in")
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the output folder should go")
    code = process.main(
        [
            "--mr",
            str(tmp_path / "in/images/mri/case1.mha"),
            "--mask",
            str(tmp_path / "in/images/body/case1.mha"),
            "--region",
            "TH",
            "--out",
            str(blocker / "sub" / "sct.mha"),
            "--no-progress",
        ]
    )
    assert code == 2  # not even results.json can be written: the log says why


def test_unwritable_case_output_is_reported_in_results(tmp_path):
    write_case(tmp_path / "in")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "synthetic-ct").write_text("a file, not a folder")
    assert process.main(["--input", str(tmp_path / "in"), "--output", str(out), "--no-progress"]) == 1
    (entry,) = results_of(out)
    assert "cannot create output folder" in entry["error_messages"][0]
    assert str(out / "images" / "synthetic-ct") in entry["error_messages"][0]


def test_mask_with_only_different_metadata_is_resampled_with_a_warning(tmp_path, caplog):
    mr_path, mask_path = write_case(tmp_path / "in")
    image = sitk.ReadImage(str(mask_path))
    image.SetOrigin(tuple(o + 0.4 for o in image.GetOrigin()))
    sitk.WriteImage(image, str(mask_path))
    with caplog.at_level(logging.WARNING):
        assert process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "mask grid differs" in caplog.text


def test_one_failing_case_does_not_stop_the_others(tmp_path):
    mr, mask = body_phantom()
    for case in ("1THA001", "1THA002", "1THA003"):
        write_volume(tmp_path / "Task1" / "TH" / case / "mr.mha", mr)
        write_volume(tmp_path / "Task1" / "TH" / case / "mask.mha", mask)
    _truncated(tmp_path / "Task1" / "TH" / "1THA002" / "mr.mha")
    assert process.main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--no-progress"]) == 1
    results = results_of(tmp_path / "out")
    assert [bool(r["error_messages"]) for r in results] == [False, True, False]
    assert sorted(p.name for p in (tmp_path / "out" / "images" / "synthetic-ct").iterdir()) == [
        "1THA001.mha",
        "1THA003.mha",
    ]


def test_the_container_path_never_imports_torch(tmp_path):
    """The image ships without torch: every module the container runs must import and run without it."""
    write_case(tmp_path / "in")
    code = (
        "import sys, importlib, pkgutil\n"
        "import process\n"
        "for package in ('engine', 'pipeline', 'preprocessing', 'postprocessing'):\n"
        "    module = importlib.import_module(package)\n"
        "    for info in pkgutil.iter_modules(module.__path__):\n"
        "        importlib.import_module(f'{package}.{info.name}')\n"
        f"status = process.main(['--input', {str(tmp_path / 'in')!r}, '--output', {str(tmp_path / 'out')!r}, '--no-progress'])\n"
        "assert status == 0, status\n"
        "assert not any(name == 'torch' or name.startswith('torch.') for name in sys.modules), 'torch imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_single_file_mode_with_samples_writes_the_spread_beside_the_output(tmp_path):
    mr_path, mask_path = write_case(tmp_path / "in")
    out = tmp_path / "sct" / "case1_sct.mha"
    args = ["--mr", str(mr_path), "--mask", str(mask_path), "--region", "ab", "--out", str(out), "--no-progress"]
    assert process.main([*args, "--samples", "3"]) == 0
    spread = sorted(out.parent.glob("*_std.mha"))
    assert len(spread) == 1 and spread[0] != out
    std, inside = read_array(spread[0]), read_array(mask_path) > 0
    assert std.shape == read_array(mr_path).shape and np.all(std[~inside] == 0)
    assert std[inside].mean() > 0.5  # the samples differ (the shipped generator reads its noise input)
