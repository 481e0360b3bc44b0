"""The real-MR panel (experiments/real_mr_panel.py): scoring on a synthetic head of known answer, the rule, the table,
and the ITK single-subject head's preparation (skips when Debian's insighttoolkit5-examples is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from experiments.real_mr_panel import ITK_DATA, ITK_HEAD, passes_rule, prepare_itk_head, score_model, table


def _synthetic_head(folder, spacing=(1.0, 1.0, 3.0)):
    """A ball of brain inside a 6 mm skull inside 5 mm of scalp, as mr/mask/brain .mha; its truth is known."""
    z, y, x = np.mgrid[0:24, 0:150, 0:150].astype(np.float32)
    r = np.sqrt(((z - 12) * spacing[2]) ** 2 + (y - 75) ** 2 + (x - 75) ** 2)
    brain = r < 50
    mr = np.where(brain, 600, np.where(r < 56, 40, np.where(r < 61, 900, 0))).astype(np.int16)
    mask = r < 71
    folder.mkdir(parents=True)
    for name, array in (("mr", mr), ("mask", mask.astype(np.uint8)), ("brain", brain.astype(np.uint8))):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(folder / f"{name}.mha"))


def test_the_water_model_on_a_synthetic_head_scores_as_it_must(tmp_path):
    """Water everywhere: no bone in the brain, no skull, brain at 0 HU, so the rule is not met; a picture is made."""
    from engine.manifest import DEFAULT_MANIFEST

    case = tmp_path / "head"
    _synthetic_head(case)
    metrics = score_model(case, "water", DEFAULT_MANIFEST, "HN", tmp_path / "out", "synthetic")
    assert metrics["brain_above_bone_pct"] == 0.0 and metrics["shell_bone_pct"] == 0.0
    assert abs(metrics["brain_mean_hu"]) < 1.0
    assert metrics["passes_rule"] is False
    assert (tmp_path / "out" / "synthetic" / "water.png").stat().st_size > 5_000


def test_rule_and_table():
    good = {"brain_above_bone_pct": 0.1, "shell_bone_pct": 62.0, "brain_mean_hu": 31.0}
    assert passes_rule(good)
    for key, value in (("brain_above_bone_pct", 0.31), ("shell_bone_pct", 49.9), ("brain_mean_hu", 14.0)):
        assert not passes_rule({**good, key: value})
    assert not passes_rule({**good, "brain_mean_hu": 51.0})
    report = {
        "models": ["a"],
        "heads": {"h1": {"a": {**good, "passes_rule": True}}, "h2": {"a": {**good, "passes_rule": False}}},
    }
    text = table(report)
    assert "| a | 0.10 % / 62.0 % / 31 HU | 0.10 % / 62.0 % / 31 HU | not met |" in text


@pytest.mark.skipif(not (ITK_DATA / ITK_HEAD).is_file(), reason="apt-get install insighttoolkit5-examples")
def test_the_itk_head_is_prepared_like_a_release_case():
    images = prepare_itk_head()
    mr, mask, brain = (sitk.GetArrayFromImage(images[n]) for n in ("mr", "mask", "brain"))
    assert images["mr"].GetSpacing() == pytest.approx((1.0, 1.0, 3.0))
    assert images["mr"].GetDirection() == pytest.approx(tuple(np.eye(3).ravel()))  # axial slices
    brain_ml = brain.sum() * 3.0 / 1000.0
    assert 900 < brain_ml < 1800  # an adult brain
    assert mask[brain > 0].all() and mask.mean() < 0.9  # the body mask holds the brain, with air around it
    assert mr[brain > 0].mean() > 3 * mr[mask == 0].mean()
