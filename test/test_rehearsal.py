"""The real-release recipe rehearsed end to end on release-sized phantoms (scripts/rehearse_release.sh): slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_release_recipe_runs_end_to_end_on_a_cpu(tmp_path):
    """Phantoms at the release's sizes -> split and folds -> cache -> anatomy network -> the L preset, fold 0 ->
    export into a fresh manifest -> process.py on the test cases -> evaluation: what a user with the release runs."""
    work = tmp_path / "rehearse"
    env = {**os.environ, "WORK": str(work), "PY": sys.executable, "STEPS": "2"}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "rehearse_release.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    manifest = json.loads((work / "weights" / "manifest.json").read_text())
    entry = manifest["models"]["release_L"]
    assert entry["kind"] == "one_step" and all(
        manifest["regions"][r]["model"] == "release_L" for r in ("HN", "TH", "AB")
    )
    results = json.loads((work / "output" / "results.json").read_text())
    assert len(results) == 3 and all(r["outputs"] and not r["error_messages"] for r in results)
    metrics = json.loads((work / "report" / "metrics.json").read_text())
    assert len(metrics["results"]) == 3
    assert "[rehearse +" in result.stdout  # each stage's wall time is printed
