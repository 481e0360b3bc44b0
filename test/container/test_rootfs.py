"""The base image's packing step (scripts/rootfs.sh, called by scripts/make_local_base.sh) on a fake root that has
/proc bind-mounted into it, as debootstrap sometimes leaves it: nothing from /proc is packed and nothing stays
mounted. Needs root and mount (skipped otherwise); no debootstrap and no docker."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rootfs.sh"


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def mounted_under(root: Path) -> list[str]:
    """Mount points under `root` as the kernel lists them (field 5 of /proc/self/mountinfo)."""
    prefix = str(root.resolve()) + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith(prefix)]


def rootfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def fake_root(tmp_path):
    """A tiny root file system with /proc bind-mounted into it and a tmpfs on dev/ holding a nested tmpfs on
    dev/pts (mounts inside mounts, the way debootstrap's chroot leaves them), unmounted again however the test ends."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    root = tmp_path / "work" / "rootfs"
    for folder in ("etc", "usr/bin", "proc", "sys", "dev", "tmp"):
        (root / folder).mkdir(parents=True)
    (root / "etc" / "os-release").write_text('PRETTY_NAME="fake"\n')
    (root / "usr" / "bin" / "python3").write_text("#!/bin/sh\n")
    try:
        mount("--bind", "/proc", str(root / "proc"))
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        pytest.skip(f"mount not permitted here ({err})")
    mount("-t", "tmpfs", "tmpfs", str(root / "dev"))
    (root / "dev" / "pts").mkdir()
    mount("-t", "tmpfs", "tmpfs", str(root / "dev" / "pts"))
    (root / "dev" / "pts" / "leftover").write_text("inside a nested mount\n")
    assert len(mounted_under(root)) == 3
    yield root
    for point in sorted(mounted_under(tmp_path), reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def test_packing_unmounts_the_root_first_and_packs_nothing_from_proc(fake_root, tmp_path):
    listed = rootfs("mounts", str(fake_root))
    assert listed.stdout.splitlines() == sorted(listed.stdout.splitlines(), reverse=True)  # deepest first
    assert listed.stdout.index("/dev/pts") < listed.stdout.index("/dev\n")
    archive = tmp_path / "rootfs.tar"
    done = rootfs("pack", str(fake_root), str(archive))
    assert done.returncode == 0, done.stderr
    assert mounted_under(fake_root) == []  # nothing left mounted
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "./etc/os-release" in names and "./usr/bin/python3" in names
    assert {"./proc", "./sys", "./dev"} <= set(names)  # the mount points stay, empty
    assert [n for n in names if n.startswith(("./proc/", "./sys/", "./dev/"))] == []
    assert len(names) < 20  # the fake root's few entries, not a copy of /proc


def test_the_check_refuses_an_archive_with_proc_entries(tmp_path):
    """What the flaky CI run produced: /proc read into the stream. The check fails on it and names the entry."""
    tree = tmp_path / "tree"
    (tree / "proc" / "1").mkdir(parents=True)
    (tree / "proc" / "1" / "status").write_text("Name: init\n")
    (tree / "etc").mkdir()
    bad = tmp_path / "bad.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(bad), "."], check=True)
    done = rootfs("check", str(bad))
    assert done.returncode != 0 and "./proc/1" in done.stderr
    good = tmp_path / "good.tar"
    subprocess.run(["tar", "-C", str(tree), "--exclude=./proc/*", "-cf", str(good), "."], check=True)
    assert rootfs("check", str(good)).returncode == 0


def test_the_clean_up_unmounts_before_it_removes(fake_root):
    work = fake_root.parent
    done = rootfs("remove", str(work))
    assert done.returncode == 0, done.stderr
    assert not work.exists() and mounted_under(work) == []
    assert Path("/proc/self/status").is_file()  # the host's /proc is untouched


def test_make_local_base_packs_and_cleans_up_through_the_tested_steps():
    """make_local_base.sh uses these steps (not a tar of its own), for packing and for its clean-up."""
    text = (SCRIPT.parent / "make_local_base.sh").read_text()
    code = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert '"$ROOTFS" pack "$rootfs"' in code and '"$ROOTFS" remove "$work"' in code
    assert "tar " not in code and "rm -rf --one-file-system" not in code
