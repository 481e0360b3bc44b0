"""Run process.py in a child process, as a user would: the one helper for benchmarks, experiments and tests.

    from benchmarks.process_runner import run_process          # tests (the repository root is on sys.path)
    from process_runner import run_process                     # a script in benchmarks/ run by path

process.py's exit status, its output, its wall time and its own peak resident memory come back together (neither
the caller's memory nor earlier children count). Standard library only: it runs wherever process.py runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROCESS_PY = REPO / "process.py"
#: A small interpreter between the caller and process.py. Linux counts the memory a process had before exec into its
#: peak (ru_maxrss), and a child forked from a large caller (a test session holds gigabytes) would report the
#: caller's size; process.py started from this fresh, small one reports its own. It writes the peak (KiB) and the
#: exit status to the file named first.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "status = subprocess.call(sys.argv[2:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "open(sys.argv[1], 'w').write(f'{peak} {status}')\n"
)


@dataclass(frozen=True)
class ProcessRun:
    """One finished process.py run."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float  # wall time from start to exit (interpreter start-up included)
    peak_rss_mb: float  # process.py's own peak resident memory (Linux: ru_maxrss in KiB / 1024)

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

    Raises subprocess.TimeoutExpired after `timeout` seconds (process.py is killed first) and, with `check`,
    subprocess.CalledProcessError when the exit status is not 0 (its output attached)."""
    command = [sys.executable, str(PROCESS_PY), *(os.fspath(arg) for arg in args)]
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        with open(folder / "out", "w+b") as out, open(folder / "err", "w+b") as err:
            started = time.perf_counter()
            child = subprocess.Popen(
                [sys.executable, "-c", _MEASURE, str(folder / "peak"), *command],
                cwd=cwd or REPO,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: a timeout ends process.py with it
            )
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill(child)
                raise subprocess.TimeoutExpired(command, timeout, _read(out), _read(err)) from None
            except BaseException:
                _kill(child)
                raise
            seconds = time.perf_counter() - started
            peak_kib, status = (int(value) for value in (folder / "peak").read_text().split())
            run = ProcessRun(command, status, _read(out), _read(err), seconds, peak_kib / 1024)
    if check and run.returncode != 0:
        raise subprocess.CalledProcessError(run.returncode, command, run.stdout, run.stderr)
    return run


def _kill(child: subprocess.Popen) -> None:
    """End the measuring interpreter and process.py under it (one process group)."""
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _read(handle) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")
