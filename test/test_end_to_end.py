"""Phantoms -> process.py -> evaluator: the whole chain a challenge participant runs, on small cases."""

from __future__ import annotations

import json
import shutil

import numpy as np

import process
from evaluation.__main__ import main as evaluate
from phantoms import write_dataset


def test_water_model_on_phantoms_is_scored_by_the_evaluator(tmp_path):
    folders = write_dataset(tmp_path / "data", ["HN", "TH", "AB"], cases=1, seed=3, size="small", progress=False)
    assert process.main(["--input", str(tmp_path / "data" / "Task1"), "--output", str(tmp_path / "out"),
                         "--model", "water", "--no-progress"]) == 0
    assert evaluate(["--pred", str(tmp_path / "out"), "--gt", str(tmp_path / "data"), "--out",
                     str(tmp_path / "report"), "--no-plots", "--strict"]) == 0
    document = json.loads((tmp_path / "report" / "metrics.json").read_text())
    scores = {r["case_id"]: r for r in document["results"]}
    assert sorted(scores) == sorted(f.name for f in folders)
    for result in scores.values():
        # Water is a poor CT: a large error, but a finite, plausible one.
        assert 50.0 < result["mae"] < 1000.0
        assert 5.0 < result["psnr"] < 35.0
        assert 0.0 < result["ms_ssim"] < 0.95
    assert document["aggregates"]["mae"]["count"] == 3

    # The same chain scores the ground truth itself as perfect: the pairing and the metrics are not lenient.
    perfect = tmp_path / "perfect"
    for folder in folders:
        (perfect / folder.name).mkdir(parents=True)
        shutil.copy(folder / "ct.mha", perfect / folder.name / "sct.mha")
    assert evaluate(["--pred", str(perfect), "--gt", str(tmp_path / "data"), "--out", str(tmp_path / "report2"),
                     "--no-plots", "--strict"]) == 0
    document = json.loads((tmp_path / "report2" / "metrics.json").read_text())
    assert all(r["mae"] == 0.0 and np.isclose(r["ms_ssim"], 1.0) for r in document["results"])
