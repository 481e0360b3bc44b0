"""Histogram standardisation (mr_normalisation.landmarks): fitted on training cases, shared by training and
inference, and it makes MR of other contrast or scale reach the network with the training set's histogram."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from engine.manifest import load_manifest, training_spec
from modelspec import Normalisation
from preprocessing.normalise import normalise_mr, standardise_histogram
from sct_testing import identity_model_entry, onnx_model, write_manifest
from training.landmarks import LEVELS, case_landmarks, fit_landmarks
from training.landmarks import main as landmarks_main
from training.splits import SCHEMA_VERSION as SPLIT_SCHEMA

LANDMARKS = ((1.0, 0.0), (25.0, 10.0), (50.0, 40.0), (75.0, 70.0), (99.0, 100.0))


def _head(rng: np.random.Generator, gamma: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A toy volume (air, three tissues) with one monotone intensity change: another scanner's histogram."""
    labels = rng.integers(0, 4, size=(6, 40, 40))
    signal = np.choose(labels, [0.02, 0.3, 0.6, 1.0]) + rng.normal(0, 0.02, labels.shape)
    mr = (scale * np.clip(signal, 0.0, None) ** gamma).astype(np.float32)
    return mr, np.ones(mr.shape, dtype=bool)


def test_landmarks_give_two_contrasts_of_one_anatomy_the_same_input():
    """The same voxels under two monotone intensity maps: equal after standardisation, not after z-scoring."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(6, 40, 40))
    signal = (np.choose(labels, [0.02, 0.3, 0.6, 1.0]) + rng.normal(0, 0.02, labels.shape)).clip(0.001, None)
    a, b = (signal * 1000).astype(np.float32), (3000 * signal**2.5).astype(np.float32)
    mask = np.ones(a.shape, dtype=bool)
    on = Normalisation(landmarks=tuple((level, float(index)) for index, level in enumerate(LEVELS)))
    plain_gap = np.abs(normalise_mr(a.copy(), mask, Normalisation()) - normalise_mr(b.copy(), mask, Normalisation()))
    standard_gap = np.abs(normalise_mr(a.copy(), mask, on) - normalise_mr(b.copy(), mask, on))
    assert plain_gap.mean() > 0.2
    assert standard_gap.mean() < 0.1 * plain_gap.mean()


def test_landmarks_map_each_percentile_onto_its_value_and_keep_the_order():
    rng = np.random.default_rng(1)
    mr, mask = _head(rng, 1.7, 900.0)
    mask[:, :5] = False
    mr[~mask] = 12345.0  # outside the mask: ignored by the percentiles, set to outside_value
    out = normalise_mr(
        mr.copy(), mask, Normalisation(method="minmax", clip_percentiles=(0.0, 100.0), landmarks=LANDMARKS)
    )
    # minmax over the clamped range maps the standard scale 0..100 onto -1..1, so landmark values are checkable
    found = np.percentile(out[mask], [p for p, _ in LANDMARKS])
    expected = np.array([v for _, v in LANDMARKS]) / 50.0 - 1.0
    assert np.allclose(found, expected, atol=0.02)
    order = np.argsort(mr[mask], kind="stable")
    assert np.all(np.diff(out[mask][order]) >= -1e-6)  # monotone: no two tissues swap
    assert np.all(out[~mask] == 0.0)


def test_tied_percentiles_stay_a_function():
    """Half the mask is exactly zero (air): the 1st and 25th percentiles tie, and air must land on the bottom of
    the scale (the first landmark), not on the value of whichever tied landmark np.interp happens to pick."""
    mr = np.zeros((4, 30, 30), dtype=np.float32)
    mr[:, 15:] = np.linspace(1, 100, 15 * 30 * 4).reshape(4, 15, 30)
    out = mr.copy()
    standardise_histogram(out, mr.ravel(), LANDMARKS)
    assert np.all(out[:, :15] == LANDMARKS[0][1])
    assert np.all(np.diff(out[:, 15:].ravel()) >= 0) and out.max() == LANDMARKS[-1][1]


def test_fitted_landmarks_are_the_mean_standard_scale():
    rng = np.random.default_rng(2)
    cases = [_head(rng, g, s) for g, s in ((1.0, 100.0), (2.0, 5000.0), (0.6, 7.0))]
    pairs = fit_landmarks(cases)
    assert [p for p, _ in pairs] == list(LEVELS)
    values = np.array([v for _, v in pairs])
    assert values[0] == 0.0 and values[-1] == 100.0 and np.all(np.diff(values) > 0)
    assert np.allclose(values, np.mean([case_landmarks(*c) for c in cases], axis=0), atol=2e-3)


def test_cli_reads_only_training_cases_and_writes_a_config_the_trainer_reads(tmp_path):
    rng = np.random.default_rng(3)
    split = {
        "schema_version": SPLIT_SCHEMA,
        "description": "t",
        "cases": {"1HNA001": {"region": "HN", "split": "train"}, "1HNA002": {"region": "HN", "split": "val"}},
    }
    (tmp_path / "split.json").write_text(json.dumps(split))
    for case_id, gamma in (("1HNA001", 1.0), ("1HNA002", 3.0)):
        folder = tmp_path / "data" / "Task1" / "HN" / case_id
        folder.mkdir(parents=True)
        mr, mask = _head(rng, gamma, 1000.0)
        for name, array in (("mr", mr), ("mask", mask.astype(np.uint8)), ("ct", np.zeros(mr.shape, np.int16))):
            sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{name}.mha"))
    out = tmp_path / "landmarks.toml"
    landmarks_main(["--data", str(tmp_path / "data"), "--split", str(tmp_path / "split.json"), "--out", str(out)])
    from training.config import load_config

    config = load_config([out], [])
    spec = training_spec(config.manifest, "one_step", config.settings)
    train_only = fit_landmarks([_head(np.random.default_rng(3), 1.0, 1000.0)])
    assert np.allclose(np.array(spec.normalisation.landmarks), np.array(train_only), atol=1e-3)
    assert spec.normalisation.clip_percentiles == (0.5, 99.5)  # the other settings keep their defaults


def test_landmarks_travel_with_a_manifest_entry_and_old_entries_read_as_before(tmp_path):
    onnx_model(tmp_path / "gen.onnx")
    entry = identity_model_entry()
    path = write_manifest(tmp_path, {"gen": entry})
    plain = load_manifest(path).models["gen"]
    assert plain.normalisation.landmarks == () and "landmarks" not in plain.settings()["mr_normalisation"]
    entry["mr_normalisation"]["landmarks"] = [list(p) for p in LANDMARKS]
    path = write_manifest(tmp_path, {"gen": entry})
    spec = load_manifest(path).models["gen"]
    assert spec.normalisation.landmarks == LANDMARKS
    assert spec.settings()["mr_normalisation"]["landmarks"] == [list(p) for p in LANDMARKS]
