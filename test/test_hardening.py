"""Hostile and odd inputs the bad-input contract must survive (each item of the hardening list that the fuzz
module does not already cover): memory bounds, outputs that must not be lost or left stale, names, regions, and
exceptions no stage expected."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from benchmarks.process_runner import run_process
from hostile import deflate_zeros, good_pair, write_meta, write_nifti, write_nrrd
from hostile import header as header_fields
from sct_testing import identity_model_entry, onnx_model, read_array, write_case, write_manifest, write_paired_case

REPO = Path(__file__).resolve().parents[1]
MEMORY_BOUND_MB = 1024  # well under the template's 4 GB: a refused case must not allocate what it refuses


def results_of(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())


def run_measured(args: list[str], cwd: Path) -> tuple[int, str, float]:
    """process.py in a child; returns (exit status, log, the child's peak RSS in MB)."""
    run = run_process(args, cwd=cwd, timeout=300)
    return run.returncode, run.log, run.peak_rss_mb


def _zero_stream(path: Path, shape_xyz: tuple[int, int, int], element: str = "MET_SHORT", bytes_per: int = 2) -> Path:
    """A compressed all-zero MetaImage (a 1.2 GB volume in about 1 MB, never in memory: hostile.deflate_zeros)."""
    payload = deflate_zeros(b"", int(np.prod(shape_xyz)) * bytes_per, "zlib")
    x, y, z = shape_xyz
    head = (
        f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = True\n"
        f"CompressedDataSize = {len(payload)}\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\n"
        f"ElementSpacing = 1 1 1\nDimSize = {x} {y} {z}\nElementType = {element}\nElementDataFile = LOCAL\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head.encode() + payload)
    return path


@pytest.mark.parametrize("kind", ["all-zero 1024 x 1024 x 600 MR", "header claims 1500 x 1500 x 1000"])
def test_oversized_cases_are_refused_within_a_bounded_memory(tmp_path, kind):
    folder = tmp_path / "in"
    if kind.startswith("all-zero"):
        _zero_stream(folder / "images" / "mri" / "big.mha", (1024, 1024, 600))
        _zero_stream(folder / "images" / "body" / "big.mha", (1024, 1024, 600), "MET_UCHAR", 1)
    else:
        mr, mask = good_pair()
        write_meta(folder / "images" / "mri" / "big.mha", mr, compress=True, DimSize="1500 1500 1000")
        write_meta(folder / "images" / "body" / "big.mha", mask)
    (folder / "region.json").write_text('"Thorax"')
    rc, log, peak = run_measured(
        ["--input", str(folder), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"], tmp_path
    )
    assert rc == 1, log[-2000:]
    (entry,) = results_of(tmp_path / "out")
    (message,) = entry["error_messages"]
    assert "big.mha" in message and "memory budget of 4.0 GB" in message
    assert peak < MEMORY_BOUND_MB, f"peak {peak:.0f} MB"
    assert not (tmp_path / "out" / "images" / "synthetic-ct" / "big.mha").exists()


def test_in_plane_resampling_that_would_explode_is_refused(tmp_path):
    """64 x 64 x 4 at 100 mm in-plane, for a model at 1 mm: 6400 x 6400 x 4 after resampling."""
    models = tmp_path / "models"
    onnx_model(models / "gen.onnx")
    manifest = write_manifest(models, {"gen": identity_model_entry(spacing=[1.0, 1.0])})
    mr, mask = good_pair((4, 64, 64))
    folder = tmp_path / "in"
    for sub, array in (("mri", mr), ("body", mask)):
        write_meta(folder / "images" / sub / "coarse.mha", array, ElementSpacing="100 100 3")
    (folder / "region.json").write_text('"Thorax"')
    rc, log, peak = run_measured(
        [
            "--input",
            str(folder),
            "--output",
            str(tmp_path / "out"),
            "--manifest",
            str(manifest),
            "--no-progress",
            "--memory-budget-gb",
            "2",
        ],
        tmp_path,
    )
    assert rc == 1, log[-2000:]
    (message,) = results_of(tmp_path / "out")[0]["error_messages"]
    assert "coarse.mha" in message and "100 x 100 x 3 mm" in message and "memory budget of 2.0 GB" in message
    assert peak < MEMORY_BOUND_MB


def test_a_budget_that_fits_lets_the_case_run(tmp_path):
    mr_path, _ = write_case(tmp_path / "in")
    assert (
        process.main(
            [
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "out"),
                "--model",
                "water",
                "--no-progress",
                "--memory-budget-gb",
                "0.5",
            ]
        )
        == 0
    )
    assert (
        process.main(
            [
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "out2"),
                "--model",
                "water",
                "--no-progress",
                "--memory-budget-gb",
                "0.00001",
            ]
        )
        == 1
    )
    assert "memory budget" in results_of(tmp_path / "out2")[0]["error_messages"][0]


def test_out_equal_to_the_input_mr_is_refused_and_the_mr_survives(tmp_path):
    mr_path, mask_path = write_case(tmp_path / "in")
    before = mr_path.read_bytes()
    code = process.main(
        [
            "--mr",
            str(mr_path),
            "--mask",
            str(mask_path),
            "--region",
            "Thorax",
            "--out",
            str(mr_path),
            "--model",
            "water",
            "--no-progress",
        ]
    )
    assert code == 1
    assert mr_path.read_bytes() == before
    (message,) = results_of(mr_path.parent)[0]["error_messages"]
    assert "would overwrite an input" in message


def test_a_rerun_where_the_case_fails_leaves_no_stale_sct(tmp_path):
    mr_path, _ = write_case(tmp_path / "in")
    args = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"]
    assert process.main(args) == 0
    sct = tmp_path / "out" / "images" / "synthetic-ct" / mr_path.name
    assert sct.is_file()
    mr_path.write_bytes(b"broken")
    assert process.main(args) == 1
    assert not sct.exists()
    assert results_of(tmp_path / "out")[0]["outputs"] == []


def test_one_case_id_under_two_regions_fails_both_instead_of_losing_one(tmp_path):
    write_paired_case(tmp_path, "AB", "1XX001")
    write_paired_case(tmp_path, "HN", "1XX001")
    write_paired_case(tmp_path, "TH", "1THA001")
    code = process.main(
        ["--input", str(tmp_path / "Task1"), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"]
    )
    assert code == 1
    entries = results_of(tmp_path / "out")
    by_folder = {
        Path(e["inputs"][0]["filename"]).parent.parent.name + "/" + Path(e["inputs"][0]["filename"]).parent.name: e
        for e in entries
    }
    assert by_folder["TH/1THA001"]["error_messages"] == []
    for key in ("AB/1XX001", "HN/1XX001"):
        (message,) = by_folder[key]["error_messages"]
        assert "appears 2 times" in message
    assert sorted(p.name for p in (tmp_path / "out" / "images" / "synthetic-ct").iterdir()) == ["1THA001.mha"]


@pytest.mark.parametrize("suffix", [".mhd", ".nii.gz", ".nrrd"])
def test_any_input_format_gives_a_readable_mha_of_the_same_stem(tmp_path, suffix):
    mr, mask = good_pair()
    folder = tmp_path / "in"
    for sub, array in (("mri", mr), ("body", mask)):
        path = folder / "images" / sub / f"case7{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    (folder / "region.json").write_text('"Thorax"')
    assert (
        process.main(["--input", str(folder), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"])
        == 0
    )
    written = sorted(p.name for p in (tmp_path / "out" / "images" / "synthetic-ct").iterdir())
    assert written == ["case7.mha"]
    sct = tmp_path / "out" / "images" / "synthetic-ct" / "case7.mha"
    assert b"ElementDataFile = LOCAL" in sct.read_bytes()[:2000]
    assert read_array(sct).shape == mr.shape


def test_out_without_mha_extension_is_refused(tmp_path, capsys):
    mr_path, mask_path = write_case(tmp_path / "in")
    with pytest.raises(SystemExit) as stop:
        process.main(
            [
                "--mr",
                str(mr_path),
                "--mask",
                str(mask_path),
                "--region",
                "Thorax",
                "--out",
                str(tmp_path / "sct"),
                "--model",
                "water",
            ]
        )
    assert stop.value.code == 2
    assert "ending in .mha" in capsys.readouterr().err
    assert not (tmp_path / "sct").exists()


def test_upper_case_extension_and_a_230_character_name_work(tmp_path):
    mr, mask = good_pair()
    folder = tmp_path / "in"
    long_name = "c" * 226 + ".mha"
    for name in ("CASE1.MHA", long_name):
        for sub, array in (("mri", mr), ("body", mask)):
            write_meta(folder / "images" / sub / name, array)
    (folder / "region.json").write_text('"Thorax"')
    assert (
        process.main(["--input", str(folder), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"])
        == 0
    )
    written = sorted(p.name for p in (tmp_path / "out" / "images" / "synthetic-ct").iterdir())
    assert written == sorted(["CASE1.mha", long_name])


def test_a_killed_runs_temporaries_are_removed_but_a_live_runs_are_not(tmp_path):
    mr_path, _ = write_case(tmp_path / "in")
    out_dir = tmp_path / "out" / "images" / "synthetic-ct"
    out_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out_dir / f".sct-{int(dead.stdout)}-0123abcd.partial.mha"
    stale.write_bytes(b"half a file")
    live = out_dir / f".sct-{os.getppid()}-0123abcd.partial.mha"
    live.write_bytes(b"another run, still writing")
    assert (
        process.main(
            ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"]
        )
        == 0
    )
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize(
    "content, ok, words",
    [
        ('"Thorax"'.encode("utf-16"), True, ""),
        ('"Thôrax"'.encode("latin-1"), False, "not UTF-8"),
        (b"[" * 1500 + b"]" * 1500, False, "nests too deep"),
        (b"[" * 100000, False, "larger than"),
        (json.dumps("x" * 1_000_000).encode(), False, "larger than"),
        (b"", False, "not valid JSON"),
    ],
)
def test_region_files_of_any_encoding_or_depth_give_one_line(tmp_path, caplog, content, ok, words):
    write_case(tmp_path / "in")
    (tmp_path / "in" / "region.json").write_bytes(content)
    with caplog.at_level(logging.ERROR):
        code = process.main(
            ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"]
        )
    (entry,) = results_of(tmp_path / "out")
    assert code == (0 if ok else 1)
    if not ok:
        (message,) = entry["error_messages"]
        assert words in message and "region.json" in message and len(message) < 500


def test_a_long_region_string_is_not_echoed_whole(tmp_path):
    mr_path, mask_path = write_case(tmp_path / "in")
    code = process.main(
        [
            "--mr",
            str(mr_path),
            "--mask",
            str(mask_path),
            "--region",
            "q" * 1_000_000,
            "--out",
            str(tmp_path / "sct.mha"),
            "--model",
            "water",
            "--no-progress",
        ]
    )
    assert code == 1
    (message,) = results_of(tmp_path)[0]["error_messages"]
    assert "unknown region" in message and len(message) < 1000


def test_empty_input_folder_still_writes_results_json(tmp_path):
    (tmp_path / "in" / "images" / "mri").mkdir(parents=True)
    (tmp_path / "in" / "region.json").write_text('"Thorax"')
    assert process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress"]) == 1
    assert results_of(tmp_path / "out") == []


def test_a_newline_in_a_file_name_keeps_the_error_on_one_line(tmp_path, caplog):
    folder = tmp_path / "in"
    name = "bad\nname.mha"
    for sub in ("mri", "body"):
        path = folder / "images" / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not an image")
    (folder / "region.json").write_text('"Thorax"')
    with caplog.at_level(logging.ERROR):
        assert (
            process.main(
                ["--input", str(folder), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"]
            )
            == 1
        )
    (message,) = results_of(tmp_path / "out")[0]["error_messages"]
    assert "\n" not in message and "bad\\nname.mha" in message
    assert [r for r in caplog.records if r.levelno >= logging.ERROR and "bad" in r.getMessage()][0].getMessage().count(
        "\n"
    ) == 0


def test_an_unexpected_exception_fails_one_case_and_the_run_goes_on(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    write_case(folder, name="a.mha")
    write_case(folder, name="b.mha")
    import pipeline.run

    real = pipeline.run.prepare_case

    def flaky(mr, mask, spec, *args):
        if mr.name == "a.mha":
            raise TypeError("an error no stage expected")
        return real(mr, mask, spec, *args)

    monkeypatch.setattr(pipeline.run, "prepare_case", flaky)
    assert (
        process.main(["--input", str(folder), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"])
        == 1
    )
    entries = {Path(e["inputs"][0]["filename"]).name: e for e in results_of(tmp_path / "out")}
    assert entries["a.mha"]["error_messages"] == [
        f"{folder.absolute() / 'images' / 'mri' / 'a.mha'}: TypeError: an error no stage expected"
    ]
    assert entries["b.mha"]["error_messages"] == []


def test_an_out_that_is_the_mr_through_a_link_is_refused_and_nothing_is_deleted(tmp_path):
    mr_path, mask_path = write_case(tmp_path / "in")
    link = tmp_path / "link_to_mr.mha"
    link.symlink_to(mr_path)
    before = mr_path.read_bytes()
    code = process.main(
        [
            "--mr",
            str(link),
            "--mask",
            str(mask_path),
            "--region",
            "Thorax",
            "--out",
            str(mr_path),
            "--model",
            "water",
            "--no-progress",
        ]
    )
    assert code == 1 and mr_path.read_bytes() == before and link.exists()


def test_a_write_that_fails_half_way_leaves_no_sct_and_no_temporary(tmp_path, monkeypatch):
    """A full disk mid-write: the case fails with one line, nothing is left under the sCT's name or as a temporary."""
    write_case(tmp_path / "in")
    real_execute = sitk.ImageFileWriter.Execute

    def half_then_full_disk(self, image, *args):
        real_execute(self, image, *args)
        written = Path(self.GetFileName())
        written.write_bytes(written.read_bytes()[: written.stat().st_size // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", half_then_full_disk)
    code = process.main(
        ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"]
    )
    assert code == 1
    (entry,) = results_of(tmp_path / "out")
    (message,) = entry["error_messages"]
    assert "No space left" in message
    out_dir = tmp_path / "out" / "images" / "synthetic-ct"
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


# --- round two (issue 35): headers of every format, the output lock, signals, discovery -----------------------


def _huge_headers(folder: Path) -> dict[str, tuple[str, str]]:
    """Files of 2 to 5 MB whose headers claim 1.26 GB of real (all-zero) data, in every accepted format, as a
    4-D or a multi-channel image: a reader that allocates before refusing goes over 1 GB. name -> (MR, words)."""
    mri = folder / "images" / "mri"
    mri.mkdir(parents=True)
    x, y, z, t = 512, 512, 240, 10
    voxels = x * y * z * t
    small = np.zeros((6, 20, 18), dtype=np.int16)
    write_nifti(mri / "nifti_4d.nii.gz", small, dims=(x, y, z, t))
    header = gzip.decompress((mri / "nifti_4d.nii.gz").read_bytes())[:352]
    (mri / "nifti_4d.nii.gz").write_bytes(deflate_zeros(header, voxels * 2, "gzip"))
    write_nifti(mri / "nifti_rgb.nii", small, dims=(1024, 1024, 400), datatype=128)
    with open(mri / "nifti_rgb.nii", "r+b") as handle:
        handle.truncate(352 + 1024 * 1024 * 400 * 3)  # a sparse file: no disk, but a reader sees every byte
    stream = deflate_zeros(b"", voxels * 2, "zlib")
    for name, fields in (
        ("meta_4d.mha", {"NDims": 4, "DimSize": f"{x} {y} {z} {t}", "ElementSpacing": "1 1 3 1"}),
        ("meta_channels.mha", {"DimSize": f"{x} {y} {z}", "ElementNumberOfChannels": t}),
    ):
        compressed = {"CompressedData": "True", "CompressedDataSize": len(stream)}
        meta = "".join(f"{k} = {v}\n" for k, v in header_fields(small, **fields, **compressed).items())
        (mri / name).write_bytes(meta.encode() + stream)
    write_nrrd(
        mri / "nrrd_vector.nrrd",
        small,
        payload=deflate_zeros(b"", voxels * 2, "gzip"),
        encoding="gzip",
        dimension=4,
        sizes=f"{t} {x} {y} {z}",
        kinds="vector domain domain domain",
        **{"space directions": "none (1,0,0) (0,1,0) (0,0,3)"},
    )
    return {
        "nifti_4d.nii.gz": ("nifti_4d", "MR is 4-D"),
        "nifti_rgb.nii": ("nifti_rgb", "vector image (3 components)"),
        "meta_4d.mha": ("meta_4d", "MR is 4-D"),
        "meta_channels.mha": ("meta_channels", "vector image (10 components)"),
        "nrrd_vector.nrrd": ("nrrd_vector", "vector image (10 components)"),
    }


def test_4d_and_multichannel_headers_of_every_format_are_refused_under_a_gigabyte(tmp_path):
    folder = tmp_path / "in"
    huge = _huge_headers(folder)
    mr, mask = good_pair()
    write_meta(folder / "images" / "mri" / "good.mha", mr)
    for name, (case_id, _) in huge.items():
        write_meta(folder / "images" / "body" / f"{case_id}.mha", mask)
    write_meta(folder / "images" / "body" / "good.mha", mask)
    (folder / "region.json").write_text('"Thorax"')
    rc, log, peak = run_measured(
        ["--input", str(folder), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"], tmp_path
    )
    assert rc == 1, log[-2000:]
    print(f"peak memory of the run over {len(huge)} refused headers and a good case: {peak:.0f} MB")  # shown with -s
    assert peak < MEMORY_BOUND_MB, f"peak {peak:.0f} MB"
    entries = {Path(e["inputs"][0]["filename"]).name: e for e in results_of(tmp_path / "out")}
    for name, (_, words) in huge.items():
        (message,) = entries[name]["error_messages"]
        assert name in message and words in message, message
    assert entries["good.mha"]["error_messages"] == []
    assert sorted(p.name for p in (tmp_path / "out" / "images" / "synthetic-ct").iterdir()) == ["good.mha"]


@pytest.mark.parametrize("pair", [("case.hdr", "case.img"), ("case.nhdr", "case.raw")])
def test_single_case_mode_refuses_formats_whose_voxels_live_in_another_file(tmp_path, pair):
    """.hdr/.img (Analyze, NIfTI pairs) and .nhdr (NRRD detached header) are refused by name, never read."""
    mr, mask = good_pair()
    header = tmp_path / pair[0]
    sitk.WriteImage(sitk.GetImageFromArray(mr), str(header))
    assert (tmp_path / pair[1]).exists()
    mask_path = write_meta(tmp_path / "mask.mha", mask)
    args = ["--mr", str(header), "--mask", str(mask_path), "--region", "Thorax", "--out", str(tmp_path / "sct.mha")]
    assert process.main([*args, "--model", "water", "--no-progress"]) == 1
    (message,) = results_of(tmp_path)[0]["error_messages"]
    assert pair[0] in message and "file type is not accepted" in message
    assert not (tmp_path / "sct.mha").exists()


def test_a_released_case_whose_mr_is_a_folder_fails_alone(tmp_path):
    write_paired_case(tmp_path, "TH", "1THA001")
    write_paired_case(tmp_path, "TH", "1THA002")
    (tmp_path / "Task1" / "TH" / "1THA002" / "mr.mha").unlink()
    (tmp_path / "Task1" / "TH" / "1THA002" / "mr.mha").mkdir()
    code = process.main(
        ["--input", str(tmp_path / "Task1"), "--output", str(tmp_path / "out"), "--model", "water", "--no-progress"]
    )
    assert code == 1
    entries = {Path(e["inputs"][0]["filename"]).parent.name: e for e in results_of(tmp_path / "out")}
    assert entries["1THA001"]["error_messages"] == []
    (message,) = entries["1THA002"]["error_messages"]
    assert "1THA002/mr.mha" in message and "not a regular file" in message


PAUSED_RUN = """
import sys
import process
real = process.run_case
def run_case(case, *args):
    if case.case_id == sys.argv[1]:
        print("PAUSED", flush=True)  # the cases before this one are written; hold the run here
        sys.stdin.readline()
    return real(case, *args)
process.run_case = run_case
sys.exit(process.main(sys.argv[2:]))
"""


def _paused_run(pause_at: str, args: list[str]) -> subprocess.Popen:
    """process.main in a child that stops before case `pause_at` until a line arrives on its stdin."""
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_RUN, pause_at, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert child.stdout.readline().strip() == "PAUSED", child.stderr.read()[-2000:]
    return child


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "process.py"), *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def test_a_second_run_into_the_same_output_folder_is_refused_and_touches_nothing(tmp_path):
    for name in ("a.mha", "b.mha"):
        write_case(tmp_path / "in_a", name=name)
        write_case(tmp_path / "in_b", name=name)
    (tmp_path / "in_b" / "images" / "mri" / "a.mha").write_bytes(b"broken: run B would fail a and delete its sCT")
    out = tmp_path / "out"
    common = ["--output", str(out), "--model", "water", "--no-progress"]
    first = _paused_run("b", ["--input", str(tmp_path / "in_a"), *common])
    try:
        sct_a = out / "images" / "synthetic-ct" / "a.mha"
        before = sct_a.read_bytes()
        second = _run(["--input", str(tmp_path / "in_b"), *common])
        assert second.returncode == 2, second.stderr[-2000:]
        errors = [line for line in second.stderr.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and "another run is writing into this output folder" in errors[0]
        assert f"pid {first.pid}" in errors[0]
        assert sct_a.read_bytes() == before and not (out / "results.json").exists()
        assert sorted(p.name for p in sct_a.parent.iterdir()) == ["a.mha"]
    finally:
        first.communicate("\n", timeout=300)
    assert first.returncode == 0
    assert [e["error_messages"] for e in results_of(out)] == [[], []]
    assert sct_a.read_bytes() == before and not (out / ".sct-run.lock").exists()

    # a run killed while it holds the lock leaves the file, and the next run takes it over
    killed = _paused_run("b", ["--input", str(tmp_path / "in_a"), *common])
    killed.kill()
    killed.communicate(timeout=60)
    assert f"pid {killed.pid}" in (out / ".sct-run.lock").read_text()
    after = _run(["--input", str(tmp_path / "in_b"), *common])
    assert after.returncode == 1, after.stderr[-2000:]
    assert "taking over the lock" in after.stderr
    assert [bool(e["error_messages"]) for e in results_of(out)] == [True, False]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_still_writes_results_json_for_every_case(tmp_path, signum):
    for name in ("a.mha", "b.mha", "c.mha"):
        write_case(tmp_path / "in", name=name)
    out = tmp_path / "out"
    stale = out / "images" / "synthetic-ct" / "c.mha"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's sCT of c")
    child = _paused_run(
        "b", ["--input", str(tmp_path / "in"), "--output", str(out), "--model", "water", "--no-progress"]
    )
    child.send_signal(signum)
    _, log = child.communicate(timeout=120)
    assert child.returncode == 128 + signum, log[-2000:]
    entries = {Path(e["inputs"][0]["filename"]).name: e for e in results_of(out)}
    name = signal.Signals(signum).name
    assert entries["a.mha"]["error_messages"] == [] and entries["a.mha"]["outputs"]
    assert entries["b.mha"]["error_messages"] == [
        f"{tmp_path / 'in' / 'images' / 'mri' / 'b.mha'}: interrupted by {name} before it finished"
    ]
    assert entries["c.mha"]["error_messages"] == [
        f"{tmp_path / 'in' / 'images' / 'mri' / 'c.mha'}: not started: the run was stopped by {name}"
    ]
    assert sorted(p.name for p in stale.parent.iterdir()) == ["a.mha"]
    assert not (out / ".sct-run.lock").exists()
