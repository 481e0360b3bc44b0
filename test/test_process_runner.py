"""benchmarks/process_runner.py: the one way benchmarks and tests run process.py in a child process."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from benchmarks.process_runner import run_process


def test_a_run_reports_status_output_time_and_its_own_peak_memory(tmp_path):
    ballast = np.ones(600 * 2**20, dtype=np.uint8)  # the caller holds 600 MB, as a long test session does
    run = run_process(["--help"])
    assert run.returncode == 0 and "usage: process.py" in run.stdout and run.seconds > 0
    assert 20 < run.peak_rss_mb < 400, run.peak_rss_mb  # process.py's own (numpy, onnxruntime), not the caller's
    del ballast
    bad = run_process(["--input", tmp_path / "missing", "--output", tmp_path / "out"])
    assert bad.returncode == 2 and "not a folder" in bad.log
    with pytest.raises(subprocess.CalledProcessError):
        run_process(["--input", tmp_path / "missing", "--output", tmp_path / "out"], check=True)


def test_a_run_past_its_timeout_is_killed_and_raises():
    with pytest.raises(subprocess.TimeoutExpired):
        run_process(["--help"], timeout=0.001)
