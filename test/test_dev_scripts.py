"""The developer scripts' switches: export.sh --dry-run changes nothing, scripts/test.sh takes torch's index."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _recorder(folder: Path, name: str, log: Path) -> None:
    """A stand-in command that appends its name and arguments to `log` and succeeds."""
    _executable(folder / name, f'#!/usr/bin/env bash\necho "{name} $*" >> "{log}"\n')


def _env(fake_bin: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
    return {**env, "PATH": f"{fake_bin}{os.pathsep}{env['PATH']}", **extra}


def test_export_dry_run_says_the_build_and_save_and_runs_neither(tmp_path):
    calls = tmp_path / "calls.log"
    _recorder(tmp_path / "bin", "docker", calls)
    archive = tmp_path / "image.tar.gz"
    command = ["bash", str(REPO / "export.sh"), "--dry-run", "--image", "reg.example/sct:1", "--output", str(archive)]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(tmp_path / "bin"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "would run: docker build --network=host -t reg.example/sct:1 ." in done.stderr
    assert "would run: docker save reg.example/sct:1 | " in done.stderr and str(archive) in done.stderr
    assert calls.read_text().splitlines() == ["docker version"]  # asked whether an engine answers, nothing else
    assert not archive.exists() and not Path(f"{archive}.partial").exists()

    tarball = tmp_path / "model.tar.gz"
    done = subprocess.run(
        ["bash", str(REPO / "export.sh"), "--model-tarball", str(tarball), "--dry-run"],
        capture_output=True,
        text=True,
        env=_env(tmp_path / "bin"),
        timeout=60,
    )
    assert done.returncode == 0 and "would run: python3 scripts/model_tarball.py" in done.stderr
    assert not tarball.exists()


def _run_test_sh(tmp_path: Path, **env: str) -> list[str]:
    """scripts/test.sh in a copy of its folder, with python3, pip, ruff and pytest replaced by recorders."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "test.sh", root / "scripts" / "test.sh")
    calls = tmp_path / "calls.log"
    venv_bin = root / ".venv" / "bin"
    for name in ("pip", "ruff", "python"):
        _recorder(venv_bin, name, calls)
    (venv_bin / "activate").write_text(f'export PATH="{venv_bin}:$PATH"\n')
    _recorder(tmp_path / "bin", "python3", calls)  # `python3 -m venv .venv`: the folder above stands for it
    done = subprocess.run(
        ["bash", str(root / "scripts" / "test.sh"), "-k", "x"],
        capture_output=True,
        text=True,
        env=_env(tmp_path / "bin", **env),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines()


def test_test_sh_installs_torch_from_the_index_it_is_given(tmp_path):
    calls = _run_test_sh(tmp_path, TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu")
    torch = [line for line in calls if "torch==" in line]
    assert torch == ["pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"]
    assert "pip install --quiet -r requirements-train.txt" in calls  # the rest from pip's own index
    assert calls[-1] == "python -m pytest test -q -k x"


def test_test_sh_without_an_index_keeps_pips_own(tmp_path):
    calls = _run_test_sh(tmp_path)
    assert [line for line in calls if "torch==" in line] == ["pip install --quiet torch==2.13.0"]
