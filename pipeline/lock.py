"""One run at a time per output folder: an advisory lock file, `.sct-run.lock`, held for the whole run.

Why: two runs into one folder delete and replace each other's files (a failing case of one removes the other's
finished sCT under the same name; the last results.json wins while describing only its own cases). With the
lock, the second run is refused with one line before it touches anything.

The lock is `fcntl.flock` on the file: the kernel releases it when its process ends, however it ends, so a lock
left by a killed run is simply taken over (its file names the old pid, for the log). The holder deletes the file
when it finishes; a run that opened the file just before it was deleted notices (another inode, or no file) and
tries again, so two runs can never both hold it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from preprocessing.errors import printable

LOG = logging.getLogger(__name__)
LOCK_NAME = ".sct-run.lock"
ATTEMPTS = 20


class OutputLocked(RuntimeError):
    """Another run holds the output folder (or its lock cannot be taken); the message is one line."""


def _holder(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return printable(handle.read(200).strip(), 120)
    except OSError:
        return ""


def _open_locked(path: Path) -> int | None:
    """A descriptor holding the lock on `path`; None when the file system cannot lock (the run goes on)."""
    for _ in range(ATTEMPTS):
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise OutputLocked(
                f"{printable(path, 400)}: cannot open the output folder's lock file ({err.strerror or err})"
            ) from err
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(descriptor)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _holder(path)
                raise OutputLocked(
                    f"{printable(path.parent, 400)}: another run is writing into this output folder"
                    f"{f' ({holder})' if holder else ''}; refusing to run beside it: wait for it to finish or "
                    "choose another output folder"
                ) from err
            LOG.warning(
                "%s: cannot lock the output folder (%s); concurrent runs into it are not detected",
                printable(path.parent, 400),
                err.strerror or err,
            )
            return None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return descriptor
        os.close(descriptor)  # the previous holder deleted the file between our open and our lock: again
    raise OutputLocked(f"{printable(path, 400)}: the output folder's lock file keeps changing; refusing to run")


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold the output folder's lock for the block (creating the folder); OutputLocked when another run holds it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputLocked(f"{printable(folder, 400)}: cannot create output folder ({err.strerror or err})") from err
    path = folder / LOCK_NAME
    descriptor = _open_locked(path)
    if descriptor is None:
        yield
        return
    try:
        left = os.read(descriptor, 200).decode("utf-8", "replace").strip()
        if left:
            LOG.info("%s: taking over the lock of an earlier run that ended without releasing it (%s)", folder, left)
        os.ftruncate(descriptor, 0)
        os.pwrite(
            descriptor,
            f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
            0,
        )
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: a run that opened it meanwhile sees another inode, and retries
        os.close(descriptor)
