"""Template-derived heads (phantoms/template_head.py): the label sampler and the renderer on real head anatomy.

Needs SPM's tissue probability map (`pip install --no-deps spm-runtime-r2025b` and nibabel, both installed by
scripts/test.sh); skips with the reason otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("nibabel", reason="template heads need nibabel")
pytest.importorskip("spm_runtime", reason="template heads need pip install --no-deps spm-runtime-r2025b")
from scipy import ndimage  # noqa: E402

from phantoms.generate import PhantomError  # noqa: E402
from phantoms.template_head import generate_template_case, load_atlas  # noqa: E402
from phantoms.tissues import BONE_LABELS, T  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPACING = (2.0, 2.0, 3.0)  # coarser in-plane than the release (1 mm) keeps each case near a second


@pytest.fixture(scope="module")
def cases():
    return {i: generate_template_case("HN", i, seed=0, spacing=SPACING) for i in (0, 1, 2, 3)}


def _volume_ml(labels: np.ndarray, which, spacing=SPACING) -> float:
    return float(np.isin(labels, [int(v) for v in which]).sum()) * spacing[0] * spacing[1] * spacing[2] / 1000.0


def test_the_atlas_is_a_whole_head():
    atlas = load_atlas()
    assert atlas.tpm.shape == (6, 121, 145, 121)
    total = atlas.tpm.sum(axis=0)
    assert np.allclose(total[total > 0.5], 1.0, atol=0.02)  # probabilities of 6 classes
    assert any("Lateral Ventricle" in n for n in atlas.names.values())
    assert any("Brain Stem" in n for n in atlas.names.values())


def test_classes_are_present_with_plausible_volumes(cases):
    for case in cases.values():
        labels = case.labels
        for label in (T.GM, T.WM, T.CSF, T.CORTICAL_DENSE, T.MARROW, T.SKIN, T.FAT_SC, T.MUSCLE, T.CORD, T.GAS):
            assert (labels == label).any(), f"{case.case_id}: no {label.name}"
        brain = _volume_ml(labels, (T.GM, T.WM, T.CORD))
        csf = _volume_ml(labels, (T.CSF,))
        bone = _volume_ml(labels, BONE_LABELS)
        # adult heads: brain about 1000-1600 ml (whole-head scale 0.88-1.1 moves it by the cube), CSF 100-600 ml
        assert 700 < brain < 2100, (case.case_id, brain)
        assert 60 < csf < 800, (case.case_id, csf)
        assert 250 < bone < 1500, (case.case_id, bone)


def test_cases_differ_and_repeat_per_seed(cases):
    again = generate_template_case("HN", 1, seed=0, spacing=SPACING)
    for name in ("mr", "ct", "mask"):
        assert np.array_equal(
            sitk.GetArrayFromImage(getattr(again, name)), sitk.GetArrayFromImage(getattr(cases[1], name))
        )
    other_seed = generate_template_case("HN", 1, seed=1, spacing=SPACING)
    assert other_seed.info["head"] != cases[1].info["head"]
    draws = [c.info["head"] for c in cases.values()]
    assert len({json.dumps(d, sort_keys=True) for d in draws}) == len(draws)
    assert cases[0].labels.shape != cases[1].labels.shape or not np.array_equal(cases[0].labels, cases[1].labels)


def test_the_skull_closes_around_the_cerebrum(cases):
    """Above the skull base, no path from the air around the head reaches the brain without crossing bone."""
    for case in cases.values():
        labels = case.labels
        bone = np.isin(labels, [int(v) for v in BONE_LABELS])
        brain = np.isin(labels, [int(T.GM), int(T.WM)])
        rows = np.flatnonzero(brain.any(axis=(1, 2)))
        top = rows[-1]
        checked = 0
        for z in range(rows[0] + int(0.45 * (top - rows[0])), top - 1):  # upper half: the vault, not the skull base
            if brain[z].sum() < 200:
                continue
            regions, _ = ndimage.label(~bone[z])
            outside = set(np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]])))
            reached = set(np.unique(regions[brain[z]])) & outside
            assert not reached, f"{case.case_id}: slice {z} opens from the brain to the outside"
            checked += 1
        assert checked >= 5


def test_ct_has_bone_where_the_labels_say_bone(cases):
    for case in cases.values():
        ct = sitk.GetArrayFromImage(case.ct).astype(np.float32)
        labels = case.labels
        tables = labels == T.CORTICAL_DENSE
        # the tables' median sits far above the 300 HU bone line, as does the vault's denser diploe
        assert np.median(ct[tables]) > 900
        vault = np.isin(labels, [int(T.CORTICAL_DENSE), int(T.MARROW)])
        assert (ct[vault] > 300).mean() > 0.7
        brain = np.isin(labels, [int(T.GM), int(T.WM)])
        core = ndimage.binary_erosion(brain, iterations=2)
        assert (ct[core] > 300).mean() < 0.001  # no bone inside the brain
        assert 20 < float(np.median(ct[core])) < 50  # brain tissue CT numbers


def test_mr_contrast_order_follows_the_sequence():
    """T1-weighted: white > grey > CSF; T2-weighted: CSF > grey > white (medians inside each tissue)."""
    seen = set()
    for index in range(12):
        case = generate_template_case("HN", index, seed=0, spacing=(3.0, 3.0, 4.0))
        key = case.info["sequence_key"]
        weighting = "t2" if key.startswith("t2") else ("t1" if key.startswith("t1") else None)
        if weighting is None or weighting in seen:
            continue
        mr = sitk.GetArrayFromImage(case.mr).astype(np.float32)
        medians = {
            label: float(np.median(mr[ndimage.binary_erosion(case.labels == label)])) for label in (T.WM, T.GM, T.CSF)
        }
        if weighting == "t1":
            assert medians[T.WM] > medians[T.GM] > medians[T.CSF], (key, medians)
        else:
            assert medians[T.CSF] > medians[T.GM] > medians[T.WM], (key, medians)
        seen.add(weighting)
        if seen == {"t1", "t2"}:
            break
    assert seen == {"t1", "t2"}


def test_template_regions_only():
    with pytest.raises(PhantomError, match="HN, BRAIN"):
        generate_template_case("TH", 0)


def test_cli_writes_template_heads(tmp_path):
    command = [sys.executable, "-m", "phantoms", "--out", str(tmp_path / "p"), "--anatomy", "template"]
    command += ["--regions", "HN", "--cases", "1", "--size", "small", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-1000:]
    record = json.loads((tmp_path / "p" / "phantoms.json").read_text())
    assert record["anatomy"] == "template" and record["cases"][0]["anatomy_source"].startswith("spm-runtime")
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p" / "Task1" / "HN" / "1HNT000" / "ct.mha")))
    assert np.array_equal(stored, sitk.GetArrayFromImage(generate_template_case("HN", 0, size="small").ct))
    bad = subprocess.run(
        command[:-6] + ["TH", "--cases", "1", "--no-progress"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert bad.returncode == 1 and "HN, BRAIN" in bad.stderr
