"""Model ensembles and flip test-time augmentation: the manifest kind, exact averaging, exact mirroring."""

from __future__ import annotations

import json

import numpy as np
import pytest

import process
from engine.ensemble import predict_views
from engine.generators import auto_batch_size
from engine.kinds import load_generator
from engine.manifest import ManifestError, load_manifest
from sct_testing import identity_model_entry, onnx_model, read_array, write_case, write_manifest


def _two_member_manifest(tmp_path, ensemble: dict | None = None, **member_changes) -> tuple:
    """Members 'plain' (passes the MR through) and 'shifted' (moves it one pixel along x), and ensemble 'both'."""
    onnx_model(tmp_path / "plain.onnx")
    onnx_model(tmp_path / "shifted.onnx", behaviour="shift")
    shifted = {**identity_model_entry(path="shifted.onnx"), **member_changes}
    models = {
        "plain": identity_model_entry(path="plain.onnx"),
        "shifted": shifted,
        "both": {
            **{k: v for k, v in identity_model_entry().items() if k != "files"},
            "kind": "ensemble",
            "members": ["plain", "shifted"],
            **(ensemble or {}),
        },
    }
    regions = {code: {"model": "both", "fallback": None} for code in ("HN", "TH", "AB")}
    return write_manifest(tmp_path, models, regions), models


def _stacks(seed: int = 0, batch: int = 3, height: int = 8, width: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 1, height, width)).astype(np.float32)


def test_an_ensemble_averages_its_members_exactly(tmp_path):
    path, _ = _two_member_manifest(tmp_path)
    manifest = load_manifest(path)
    ensemble = load_generator(manifest.models["both"], "cpu")
    stacks, seeds = _stacks(), np.arange(3, dtype=np.uint64)
    plain = load_generator(manifest.models["plain"], "cpu").predict(stacks, seeds)
    shifted = load_generator(manifest.models["shifted"], "cpu").predict(stacks, seeds)
    assert not np.allclose(plain, shifted)
    np.testing.assert_allclose(ensemble.predict(stacks, seeds), (plain + shifted) / 2, rtol=0, atol=1e-7)
    views = predict_views(ensemble, stacks, seeds)
    assert len(views) == 2 and np.array_equal(views[0], plain) and np.array_equal(views[1], shifted)


def test_flip_tta_mirrors_back_exactly(tmp_path):
    """f shifts one pixel along x: f(x)[j] = x[j+1]; mirror(f(mirror(x)))[j] = x[j-1]; TTA is their mean."""
    onnx_model(tmp_path / "shifted.onnx", behaviour="shift")
    onnx_model(tmp_path / "plain.onnx")
    models = {
        "shifted": {**identity_model_entry(path="shifted.onnx"), "flip_tta": True},
        "plain": {**identity_model_entry(path="plain.onnx"), "flip_tta": True},
    }
    manifest = load_manifest(write_manifest(tmp_path, models))
    stacks, seeds = _stacks(1), np.arange(3, dtype=np.uint64)
    x = stacks[:, 0]
    expected = np.zeros_like(x)
    expected[..., :-1] += x[..., 1:] / 2  # f(x): the right neighbour (zero padding at the edge)
    expected[..., 1:] += x[..., :-1] / 2  # the mirrored pass: the left neighbour
    shifted = load_generator(manifest.models["shifted"], "cpu")
    np.testing.assert_allclose(shifted.predict(stacks, seeds)[:, 0], expected, rtol=0, atol=1e-7)
    # a mirror-symmetric model (pointwise) gives exactly its plain output, and its two views agree
    plain = load_generator(manifest.models["plain"], "cpu")
    assert np.array_equal(plain.predict(stacks, seeds), stacks)
    first, mirrored = predict_views(plain, stacks, seeds)
    assert np.array_equal(first, mirrored)


def test_flip_tta_halves_the_automatic_batch(tmp_path):
    onnx_model(tmp_path / "plain.onnx")
    models = {
        "plain": identity_model_entry(path="plain.onnx"),
        "tta": {**identity_model_entry(path="plain.onnx"), "flip_tta": True},
    }
    manifest = load_manifest(write_manifest(tmp_path, models))
    plain = auto_batch_size(manifest.models["plain"], "cpu", 128 * 128)
    assert auto_batch_size(manifest.models["tta"], "cpu", 128 * 128) == plain // 2


@pytest.mark.parametrize(
    "ensemble, member_changes, words",
    [
        ({"members": ["plain"]}, {}, "at least two"),
        ({"members": ["plain", "nothing"]}, {}, "member 'nothing' is not a model entry"),
        ({"members": ["plain", "plain"]}, {}, "listed twice"),
        ({}, {"context_slices": 3}, "member 'shifted' has context_slices 3"),
        ({}, {"ct_window_hu": [-1024.0, 3071.0]}, "member 'shifted' has ct_window_hu"),
        ({"files": {"generator": {"path": "plain.onnx", "sha256": "0" * 64}}}, {}, "no files of its own"),
        ({"flip_tta": "yes"}, {}, "flip_tta must be true or false"),
        ({}, {"members": ["plain", "both"]}, "'members' is required for kind 'ensemble' and allowed for no other"),
    ],
)
def test_a_malformed_ensemble_is_a_one_line_error(tmp_path, ensemble, member_changes, words):
    with pytest.raises(ManifestError) as info:
        path, _ = _two_member_manifest(tmp_path, ensemble, **member_changes)
        load_manifest(path)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_nested_ensemble_is_refused(tmp_path):
    path, models = _two_member_manifest(tmp_path)
    data = json.loads(path.read_text())
    data["models"]["outer"] = {**data["models"]["both"], "members": ["both", "plain"]}
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="itself an ensemble"):
        load_manifest(path)


def test_an_ensemble_verifies_every_members_checksum(tmp_path):
    path, _ = _two_member_manifest(tmp_path)
    manifest = load_manifest(path)
    (tmp_path / "shifted.onnx").write_bytes((tmp_path / "shifted.onnx").read_bytes() + b"\0")
    with pytest.raises(ManifestError, match="shifted.onnx: checksum mismatch"):
        load_generator(manifest.models["both"], "cpu")


def test_an_ensemble_runs_in_the_pipeline_and_samples_show_the_members_spread(tmp_path):
    path, _ = _two_member_manifest(tmp_path / "weights")
    mr, mask = write_case(tmp_path / "in", shape=(5, 24, 20))
    out = tmp_path / "out.mha"

    def run(target, *extra: str) -> int:
        arguments = ["--manifest", str(path), "--mr", str(mr), "--mask", str(mask), "--region", "Thorax"]
        return process.main(arguments + ["--out", str(target), "--device", "cpu", *extra])

    assert run(out, "--samples", "2") == 0
    sct, spread = read_array(out), read_array(out.with_name(f"{out.name.split('.')[0]}_std.mha"))
    singles = {}
    for name in ("plain", "shifted"):
        assert run(tmp_path / f"{name}.mha", "--model", name) == 0
        singles[name] = read_array(tmp_path / f"{name}.mha")
    body = read_array(mask) > 0
    np.testing.assert_allclose(sct[body], (singles["plain"][body] + singles["shifted"][body]) / 2, atol=0.05)
    # two deterministic members: the spread is half their difference, and zero outside the body
    np.testing.assert_allclose(spread[body], np.abs(singles["plain"][body] - singles["shifted"][body]) / 2, atol=0.05)
    assert spread[body].max() > 1.0 and np.all(spread[~body] == 0)


def test_export_adds_an_ensemble_entry_that_loads_and_refuses_unknown_members(tmp_path):
    from training.export import main as export_main

    onnx_model(tmp_path / "plain.onnx")
    onnx_model(tmp_path / "shifted.onnx", behaviour="shift")
    path = write_manifest(
        tmp_path,
        {"plain": identity_model_entry(path="plain.onnx"), "shifted": identity_model_entry(path="shifted.onnx")},
    )
    args = ["--manifest", str(path), "--name", "folds", "--regions", "TH", "--flip-tta"]
    assert export_main(args + ["--ensemble-of", "plain,shifted"]) == 0
    manifest = load_manifest(path)
    route = manifest.route("TH")
    assert route.primary.kind == "ensemble" and route.primary.flip_tta
    assert [m.name for m in route.primary.members] == ["plain", "shifted"]
    before = path.read_text()
    assert export_main(args + ["--ensemble-of", "plain,missing"]) == 2
    assert path.read_text() == before  # a refused ensemble leaves the manifest as it was
