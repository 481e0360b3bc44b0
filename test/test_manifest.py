"""The manifest is validated on load, its files are checked, and regions route to a primary and a fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest

import process
from engine.manifest import DEFAULT_MANIFEST, ManifestError, load_manifest
from engine.regions import REGIONS, RegionError, canonical_region
from modelspec import normalised_to_hu
from sct_testing import identity_model_entry, onnx_model, write_case, write_manifest


@pytest.mark.parametrize(
    "value, code",
    [
        ("Head and Neck", "HN"),
        ("head and neck", "HN"),
        ("  HEAD  AND neck ", "HN"),
        ("hn", "HN"),
        ("Thorax", "TH"),
        ("TH", "TH"),
        ("Abdomen", "AB"),
        ("ab", "AB"),
        ("Brain", "BRAIN"),
        ("pelvis", "PELVIS"),
    ],
)
def test_region_spellings(value, code):
    assert canonical_region(value) == code


@pytest.mark.parametrize("value", ["Knee", "", None, 3, "Head"])
def test_unknown_region_lists_the_accepted_values(value):
    with pytest.raises(RegionError) as info:
        canonical_region(value)
    for row in REGIONS.values():
        assert row.name in str(info.value)


def test_shipped_manifest_routes_every_region():
    manifest = load_manifest(DEFAULT_MANIFEST)
    for code in REGIONS:
        route = manifest.route(code)
        route.primary.verify_files()
        if route.fallback is not None:
            route.fallback.verify_files()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: d["models"]["gen"].update(kind="gan"), "kind 'gan'"),
        (lambda d: d["models"]["gen"].update(context_slices=4), "odd positive"),
        (lambda d: d["models"]["gen"].update(colour="blue"), "unknown key"),
        (lambda d: d["models"]["gen"]["mr_normalisation"].update(method="histogram"), "normalisation method"),
        (lambda d: d["models"]["gen"]["mr_normalisation"].update(landmarks=[[1, 0], [50, 0]]), "strictly increasing"),
        (lambda d: d["models"]["gen"]["mr_normalisation"].update(landmarks=[[1, 0]]), "at least two pairs"),
        (lambda d: d["models"]["gen"]["mr_normalisation"].update(landmarks=[[1, 0], [101, 5]]), "at least two pairs"),
        (lambda d: d["models"]["gen"]["mr_normalisation"].update(landmarks=[[1, 0, 3]]), "two numbers"),
        (lambda d: d["models"]["gen"]["mr_normalisation"].update(landmarks="on"), "pairs"),
        (lambda d: d["models"]["gen"].update(ct_window_hu=[100, -100]), "low < high"),
        (lambda d: d["models"]["gen"].update(output_dtype="uint8"), "output_dtype"),
        (lambda d: d["models"]["gen"]["files"]["generator"].update(sha256="abc"), "malformed sha256"),
        (lambda d: d["regions"].update(HN={"model": "nothing"}), "not a model entry"),
        (lambda d: d["regions"].update(Knee={"model": "gen"}), "unknown region"),
        (lambda d: d.update(schema_version=99), "schema_version"),
    ],
)
def test_malformed_manifest_is_a_one_line_error(tmp_path, change, words):
    onnx_model(tmp_path / "gen.onnx")
    path = write_manifest(tmp_path, {"gen": identity_model_entry()})
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert words in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_checksum_mismatch_are_named(tmp_path):
    onnx_model(tmp_path / "gen.onnx")
    manifest = load_manifest(write_manifest(tmp_path, {"gen": identity_model_entry()}))
    spec = manifest.models["gen"]
    spec.verify_files()
    (tmp_path / "gen.onnx").write_bytes((tmp_path / "gen.onnx").read_bytes() + b"\0")
    with pytest.raises(ManifestError, match="checksum mismatch"):
        spec.verify_files()
    (tmp_path / "gen.onnx").unlink()
    with pytest.raises(ManifestError, match="model file missing"):
        spec.verify_files()


def _fallback_setup(tmp_path, behaviour="centre"):
    onnx_model(tmp_path / "weights" / "gen.onnx", behaviour=behaviour)
    models = {"gen": identity_model_entry(), "water": {"kind": "water"}}
    manifest = write_manifest(tmp_path / "weights", models, regions={"TH": {"model": "gen", "fallback": "water"}})
    write_case(tmp_path / "in")
    return manifest


def _run(tmp_path, manifest, *extra):
    code = process.main(
        [
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--manifest",
            str(manifest),
            "--no-progress",
            *extra,
        ]
    )
    return code, json.loads((tmp_path / "out" / "results.json").read_text())[0]


def test_primary_runs_when_it_is_fine(tmp_path):
    code, entry = _run(tmp_path, _fallback_setup(tmp_path))
    assert code == 0 and entry["model"] == "gen" and "fallback_reason" not in entry


def test_fallback_runs_when_the_primary_fails_its_checksum(tmp_path):
    manifest = _fallback_setup(tmp_path)
    (tmp_path / "weights" / "gen.onnx").write_bytes(b"tampered")
    code, entry = _run(tmp_path, manifest)
    assert code == 0 and entry["model"] == "water"
    assert "checksum mismatch" in entry["fallback_reason"]


def test_fallback_runs_when_the_primary_output_is_unusable(tmp_path):
    code, entry = _run(tmp_path, _fallback_setup(tmp_path, behaviour="nan"))
    assert code == 0 and entry["model"] == "water"
    assert "NaN/inf" in entry["fallback_reason"]


def test_forced_model_and_unknown_override(tmp_path):
    manifest = _fallback_setup(tmp_path)
    code, entry = _run(tmp_path, manifest, "--model", "water")
    assert code == 0 and entry["model"] == "water"
    code, entry = _run(tmp_path, manifest, "--model", "gan")
    assert code == 1 and "neither a manifest entry" in entry["error_messages"][0]


def test_every_shipped_model_runs_and_honours_its_contract():
    """Each shipped model loads (checksums included) and maps MR stacks to finite CT in [-1, 1], deterministically."""
    import numpy as np

    from engine.kinds import load_generator

    manifest = load_manifest(DEFAULT_MANIFEST)
    for spec in manifest.models.values():
        generator = load_generator(spec, "cpu")
        side = 2 * max(16, spec.divisible_by)
        stacks = np.random.default_rng(0).standard_normal((2, spec.context_slices, side, side)).astype(np.float32)
        seeds = np.array([1, 2], dtype=np.uint64)
        out = generator.predict(stacks, seeds)
        assert out.shape == (2, 1, side, side), spec.name
        assert np.all(np.isfinite(out)), spec.name
        if spec.kind == "water":  # the baseline's contract: water (0 HU) everywhere, whatever the MR
            np.testing.assert_allclose(normalised_to_hu(out.copy(), spec.ct_window_hu), 0.0, atol=1.0)
        else:  # a model reads its MR: two different stacks, two different slices
            assert np.abs(out[0] - out[1]).max() > 1e-3, spec.name
        np.testing.assert_array_equal(out, generator.predict(stacks, seeds))


def test_fallback_runs_when_the_primary_body_mean_is_implausible(tmp_path):
    manifest = _fallback_setup(tmp_path)
    data = json.loads(manifest.read_text())
    data["models"]["gen"]["ct_window_hu"] = [2000.0, 3000.0]  # the same network now claims bone everywhere
    manifest.write_text(json.dumps(data))
    code, entry = _run(tmp_path, manifest)
    assert code == 0 and entry["model"] == "water"
    assert "mean HU in the body" in entry["fallback_reason"]


def test_usability_check_refuses_a_saturated_or_implausible_sct(tmp_path):
    from pipeline.run import MAX_SATURATED_FRACTION, SANE_BODY_MEAN_HU, UnusableOutput, check_usable

    onnx_model(tmp_path / "gen.onnx")
    spec = load_manifest(write_manifest(tmp_path, {"gen": identity_model_entry()})).models["gen"]  # window 0-1000
    mask = np.ones((4, 10, 10), dtype=np.uint8)
    fine = np.full(mask.shape, 300.0, dtype=np.float32)
    check_usable(fine, mask, spec)
    saturated = fine.copy()
    saturated.reshape(-1)[: int(saturated.size * (MAX_SATURATED_FRACTION + 0.05))] = 1000.0
    with pytest.raises(UnusableOutput, match="at the HU window's ends"):
        check_usable(saturated, mask, spec)
    almost = fine.copy()
    almost.reshape(-1)[: int(almost.size * (MAX_SATURATED_FRACTION - 0.05))] = 1000.0
    check_usable(almost, mask, spec)  # just under the limit is still usable
    with pytest.raises(UnusableOutput, match="mean HU"):
        check_usable(np.full(mask.shape, SANE_BODY_MEAN_HU[1] + 50.0, dtype=np.float32), mask, spec)


def test_a_malformed_manifest_exits_2_with_one_line(tmp_path, caplog):
    write_case(tmp_path / "in")
    bad = tmp_path / "manifest.json"
    bad.write_text('{"schema_version": 1, "defaults": {"context_slices": 4}, "models": {}, "regions": {}}')
    code = process.main(
        ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--manifest", str(bad), "--no-progress"]
    )
    assert code == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "'models' must be a non-empty object" in errors[0].getMessage()
    assert str(bad) in errors[0].getMessage()
