"""benchmarks/process_runner.py: the one way benchmarks and tests run process.py in a child process."""

from __future__ import annotations

import subprocess

import pytest

from benchmarks.process_runner import run_process


def test_a_run_reports_status_output_time_and_its_own_peak_memory(tmp_path):
    run = run_process(["--help"])
    assert run.returncode == 0 and "usage: process.py" in run.stdout and run.seconds > 0
    assert 20 < run.peak_rss_mb < 2000  # the interpreter with numpy and onnxruntime loaded, not zero, not a parent's
    bad = run_process(["--input", tmp_path / "missing", "--output", tmp_path / "out"])
    assert bad.returncode == 2 and "not a folder" in bad.log
    with pytest.raises(subprocess.CalledProcessError):
        run_process(["--input", tmp_path / "missing", "--output", tmp_path / "out"], check=True)


def test_a_run_past_its_timeout_is_killed_and_raises():
    with pytest.raises(subprocess.TimeoutExpired):
        run_process(["--help"], timeout=0.001)
