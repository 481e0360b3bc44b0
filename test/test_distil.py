"""Distillation targets (training/distil.py): the teacher's sCT blended into the training cases' CT, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from engine.manifest import DEFAULT_MANIFEST
from sct_testing import write_paired_case
from training.dataset import find_cases
from training.distil import main as distil_main
from training.splits import Split, write_split


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_the_distillation_root_blends_the_teacher_into_training_cases_only(tmp_path):
    """The water model (0 HU in the body) as teacher: training CTs move to w * 0 + (1 - w) * CT inside the body,
    validation CTs stay the real ones, test cases are never copied, the teacher's sCTs are kept for a rerun."""
    data = tmp_path / "data"
    ids = {"1THA000": "train", "1THA001": "train", "1THA002": "val", "1THA003": "test"}
    for index, case_id in enumerate(ids):
        write_paired_case(data, "TH", case_id, shape=(6, 30, 26), seed=index)
    write_split(Split(ids, {case_id: "TH" for case_id in ids}), tmp_path / "split.json")
    out = tmp_path / "distil"
    arguments = ["--teacher", "water", "--manifest", str(DEFAULT_MANIFEST), "--data", str(data)]
    arguments += ["--split", str(tmp_path / "split.json"), "--out", str(out), "--no-progress"]
    assert distil_main(arguments + ["--teacher-weight", "0.75"]) == 0

    found = {d.name for d, _ in find_cases(out)}
    assert found == {"1THA000", "1THA001", "1THA002"}  # the test case never enters the distillation root
    for case_id in ("1THA000", "1THA001"):
        case = data / "Task1" / "TH" / case_id
        ct, mask = _array(case / "ct.mha").astype(np.float32), _array(case / "mask.mha") > 0
        target = _array(out / "Task1" / "TH" / case_id / "ct.mha").astype(np.float32)
        expected = np.where(mask, np.rint(0.25 * ct), ct)  # the water teacher is 0 HU inside the body
        assert np.array_equal(target, expected)
        assert np.array_equal(_array(out / "Task1" / "TH" / case_id / "mr.mha"), _array(case / "mr.mha"))
        assert (out / "teacher" / f"{case_id}.mha").is_file()
    val = data / "Task1" / "TH" / "1THA002"
    assert np.array_equal(_array(out / "Task1" / "TH" / "1THA002" / "ct.mha"), _array(val / "ct.mha"))
    record = json.loads((out / "distil.json").read_text())
    assert record["teacher"] == "water" and record["teacher_weight"] == 0.75
    assert record["train"] == ["1THA000", "1THA001"] and record["val"] == ["1THA002"]

    # a second weight reuses the kept teacher sCTs: the teacher is not run again
    stamp = (out / "teacher" / "1THA000.mha").stat().st_mtime_ns
    assert distil_main(arguments + ["--teacher-weight", "1.0"]) == 0
    assert (out / "teacher" / "1THA000.mha").stat().st_mtime_ns == stamp
    ct = _array(data / "Task1" / "TH" / "1THA000" / "mask.mha") > 0
    assert np.all(_array(out / "Task1" / "TH" / "1THA000" / "ct.mha")[ct] == 0)
    assert distil_main(arguments + ["--teacher-weight", "1.5"]) == 2
