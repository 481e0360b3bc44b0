"""Run process.py in a child process, as a user would: the one helper for benchmarks, experiments and tests.

    from benchmarks.process_runner import run_process          # tests (the repository root is on sys.path)
    from process_runner import run_process                     # a script in benchmarks/ run by path

The child's exit status, its output, its wall time and its own peak resident memory come back together (the
memory from wait4, so earlier children do not count). Standard library only: it runs wherever process.py runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROCESS_PY = REPO / "process.py"
_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class ProcessRun:
    """One finished process.py run."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float  # wall time from start to exit (interpreter start-up included)
    peak_rss_mb: float  # the child's own peak resident memory (Linux: ru_maxrss in KiB / 1024)

    @property
    def log(self) -> str:
        """stdout and stderr together (the log goes to stderr)."""
        return self.stdout + self.stderr


def run_process(
    args: Sequence[str | os.PathLike],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    check: bool = False,
) -> ProcessRun:
    """`python process.py ARGS` with this interpreter in `cwd` (default: the repository).

    Raises subprocess.TimeoutExpired after `timeout` seconds (the child is killed first) and, with `check`,
    subprocess.CalledProcessError when the exit status is not 0 (its output attached)."""
    command = [sys.executable, str(PROCESS_PY), *(os.fspath(arg) for arg in args)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd or REPO, env=env, stdout=out, stderr=err)
        deadline = None if timeout is None else started + timeout
        try:
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                if deadline is not None and time.perf_counter() > deadline:
                    child.kill()
                    os.wait4(child.pid, 0)
                    child.returncode = -9
                    raise subprocess.TimeoutExpired(command, timeout, _read(out), _read(err))
                time.sleep(_POLL_SECONDS)
        except BaseException:
            if child.returncode is None:
                child.kill()
                child.wait()
            raise
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        run = ProcessRun(command, child.returncode, _read(out), _read(err), seconds, usage.ru_maxrss / 1024)
    if check and run.returncode != 0:
        raise subprocess.CalledProcessError(run.returncode, command, run.stdout, run.stderr)
    return run


def _read(handle) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")
