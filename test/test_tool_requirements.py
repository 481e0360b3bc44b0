"""The README's first venv holds requirements.txt only (the container's): the tools then say in one line what to add."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_without(package: str, module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m module args` in a child where `package` cannot be imported (as in a requirements.txt venv)."""
    code = (
        "import runpy, sys\n"
        f"sys.modules[{package!r}] = None  # import {package} raises ModuleNotFoundError, as when it is not installed\n"
        f"sys.argv = [{module!r}, *{list(args)!r}]\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["evaluation", "phantoms"])
def test_a_tool_without_scipy_says_what_to_install_in_one_line(module):
    run = _run_without("scipy", module, "--help")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        f"python -m {module} needs scipy, which requirements.txt (the container's) leaves out: "
        "pip install -r requirements-dev.txt"
    ]


def test_plots_without_matplotlib_are_refused_before_any_work(tmp_path, monkeypatch, caplog):
    from evaluation.__main__ import main as evaluate
    from phantoms.__main__ import main as phantoms

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert evaluate(["--pred", str(tmp_path), "--gt", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "matplotlib" in caplog.text and "--no-plots" in caplog.text and not (tmp_path / "r").exists()
    with pytest.raises(SystemExit) as refused:
        phantoms(["--out", str(tmp_path / "p"), "--cases", "1", "--overview"])
    assert refused.value.code == 2 and not (tmp_path / "p").exists()
