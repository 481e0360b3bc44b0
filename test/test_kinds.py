"""Model kinds are named by the inference graph that runs, built through one registry, and old names still read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engine import kinds
from engine.kinds import KINDS, Kind, kind_name, load_generator
from engine.manifest import DEFAULT_MANIFEST, ManifestError, load_manifest, parse_manifest
from sct_testing import identity_model_entry, onnx_model, write_manifest

REPO = Path(__file__).resolve().parents[1]
#: model_weights/manifest.json as it was before the kinds were renamed (kinds "drifting" and "ldm").
OLD_MANIFEST = Path(__file__).resolve().parent / "data" / "manifest_before_kind_names.json"


def _without_names(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key not in ("kind", "description")}


def test_an_old_manifest_reads_as_the_current_one():
    old_data = json.loads(OLD_MANIFEST.read_text())
    assert {entry["kind"] for entry in old_data["models"].values()} == {"water", "drifting", "ldm", "ensemble"}
    old = parse_manifest(old_data, DEFAULT_MANIFEST)  # its files are the shipped ones
    current = load_manifest(DEFAULT_MANIFEST)
    renamed = {"drifting": "one_step", "ldm": "latent_diffusion"}
    for name, entry in old_data["models"].items():
        assert old.models[name].kind == renamed.get(entry["kind"], entry["kind"])
        current_entry = json.loads(DEFAULT_MANIFEST.read_text())["models"].get(name)
        if current_entry is not None and _without_names(current_entry) == _without_names(entry):
            assert old.models[name] == current.models[name], name
    for region in old_data["regions"]:  # its routes read as the current manifest's entries of those names
        primary = old.route(region).primary
        assert primary == current.models[primary.name], region


def test_the_shipped_manifest_names_kinds_by_what_runs_and_keeps_the_objective_in_provenance():
    manifest = load_manifest(DEFAULT_MANIFEST)
    assert {spec.kind for spec in manifest.models.values()} <= set(KINDS)
    one_step = [spec for spec in manifest.models.values() if spec.kind == "one_step"]
    assert len(one_step) >= 2
    for spec in one_step:
        assert spec.provenance["model"]["kind"] in ("l1", "drifting"), spec.name  # the training objective
    assert manifest.models["l1"].provenance["model"]["kind"] == "l1"
    assert manifest.models["drifting"].provenance["model"]["kind"] == "drifting"


@pytest.fixture
def small_manifest(tmp_path) -> Path:
    """Entries whose names are not kind names, so --model VALUE can only be read as a kind."""
    onnx_model(tmp_path / "gen.onnx")
    return write_manifest(tmp_path, {"gen": identity_model_entry(), "zero": {"kind": "water"}})


@pytest.mark.parametrize("value", ["one_step", "drifting"])
def test_model_option_takes_a_kind_by_its_current_or_former_name(small_manifest, value):
    manifest = load_manifest(small_manifest)
    assert manifest.resolve("TH", value).primary.name == "gen"
    assert manifest.resolve("TH", "water").primary.name == "zero"


def test_an_unknown_kind_is_one_error_naming_every_kind_and_its_former_names(small_manifest):
    with pytest.raises(ManifestError) as info:
        load_manifest(small_manifest).resolve("TH", "gan")
    message = str(info.value)
    for name in ("water", "one_step (formerly drifting)", "latent_diffusion (formerly ldm)", "ensemble"):
        assert name in message
    data = json.loads(small_manifest.read_text())
    data["models"]["gen"]["kind"] = "gan"
    with pytest.raises(ManifestError, match="kind 'gan' is not one of: water, one_step"):
        parse_manifest(data, small_manifest)


def test_a_kind_registered_once_is_validated_and_built(small_manifest, monkeypatch):
    """The registry is the only place a kind is named: its file roles reach the manifest, its builder the loader."""

    class Negated:
        def __init__(self, spec, device, build):
            self.spec, self.device = spec, "cpu"
            self.inner = build(dataclasses.replace(spec, kind="one_step"), device)

        def predict(self, stacks, seeds):
            return -self.inner.predict(stacks, seeds)

    monkeypatch.setitem(
        kinds.KINDS, "negated", Kind("negated", "minus a one-step model", ("generator", "extra"), Negated)
    )
    data = json.loads(small_manifest.read_text())
    data["models"]["neg"] = {**data["models"]["gen"], "kind": "negated"}
    with pytest.raises(ManifestError, match=r"kind 'negated' needs file role\(s\) \['extra'\]"):
        parse_manifest(data, small_manifest)
    data["models"]["neg"]["files"]["extra"] = data["models"]["neg"]["files"]["generator"]
    manifest = parse_manifest(data, small_manifest)
    stacks = np.linspace(-1, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 1, 8, 8)
    seeds = np.arange(2)
    plain = load_generator(manifest.models["gen"], "cpu").predict(stacks, seeds)
    np.testing.assert_array_equal(load_generator(manifest.models["neg"], "cpu").predict(stacks, seeds), -plain)
    assert manifest.resolve("TH", "negated").primary.name == "neg"


def test_kind_names_map_former_names_only():
    assert kind_name("drifting") == "one_step" and kind_name("ldm") == "latent_diffusion"
    assert all(kind_name(name) == name for name in KINDS)
    assert kind_name("l1") is None and kind_name(None) is None
