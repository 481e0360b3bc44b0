"""A model tarball at /opt/ml/model/ replaces the baked-in manifest; a broken one falls back to the baked models."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

import process
from sct_testing import identity_model_entry, onnx_model, write_case, write_manifest

REPO = Path(__file__).resolve().parents[1]


def results_of(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())


@pytest.fixture
def tarball_dir(tmp_path, monkeypatch) -> Path:
    """An extracted tarball with one model, 'tarball_gen', routing every region."""
    folder = tmp_path / "opt_ml_model"
    onnx_model(folder / "gen.onnx")
    write_manifest(
        folder,
        {"tarball_gen": identity_model_entry()},
        regions={code: {"model": "tarball_gen", "fallback": None} for code in ("HN", "TH", "AB")},
    )
    monkeypatch.setattr(process, "MODEL_TARBALL_DIR", folder)
    return folder


def _run(tmp_path: Path, *extra: str) -> tuple[int, list[dict]]:
    write_case(tmp_path / "in")
    code = process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress", *extra])
    return code, results_of(tmp_path / "out")


def test_a_mounted_tarball_replaces_the_baked_manifest(tmp_path, tarball_dir):
    code, (entry,) = _run(tmp_path)
    assert code == 0 and entry["model"] == "tarball_gen" and "fallback_reason" not in entry


def test_an_explicit_manifest_wins_over_the_tarball(tmp_path, tarball_dir):
    code, (entry,) = _run(tmp_path, "--manifest", str(REPO / "model_weights" / "manifest.json"), "--model", "water")
    assert code == 0 and entry["model"] == "water"


@pytest.mark.parametrize("damage", ["checksum", "missing file", "bad manifest"])
def test_a_broken_tarball_is_one_error_and_the_baked_models_run(tmp_path, tarball_dir, caplog, damage):
    if damage == "checksum":
        (tarball_dir / "gen.onnx").write_bytes((tarball_dir / "gen.onnx").read_bytes() + b"x")
    elif damage == "missing file":
        (tarball_dir / "gen.onnx").unlink()
    else:
        (tarball_dir / "manifest.json").write_text("{")
    code, (entry,) = _run(tmp_path, "--model", "water")  # water: the baked manifest's cheapest model
    assert code == 0
    assert entry["model"] == "water"
    assert "model tarball" in entry["fallback_reason"] and "baked-in models ran instead" in entry["fallback_reason"]
    assert [r for r in caplog.records if r.levelname == "ERROR" and "model tarball" in r.getMessage()]


def test_extra_files_in_a_tarball_are_reported_and_ignored(tmp_path, tarball_dir, caplog):
    (tarball_dir / "notes.txt").write_text("left over")
    code, (entry,) = _run(tmp_path)
    assert code == 0 and entry["model"] == "tarball_gen"
    assert "notes.txt" in caplog.text


def test_export_writes_the_manifest_and_exactly_its_files(tmp_path):
    out = tmp_path / "model.tar.gz"
    done = subprocess.run(
        ["bash", str(REPO / "export.sh"), "--model-tarball", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert "bytes" in done.stdout
    manifest = json.loads((REPO / "model_weights" / "manifest.json").read_text())
    named = {item["path"] for entry in manifest["models"].values() for item in (entry.get("files") or {}).values()}
    with tarfile.open(out) as archive:
        assert sorted(archive.getnames()) == sorted({"manifest.json", *named})
        archive.extractall(tmp_path / "extracted", filter="data")
    from engine.manifest import check_tarball

    assert set(check_tarball(tmp_path / "extracted" / "manifest.json").models) == set(manifest["models"])
