"""Atomic image writing: a crash or a full disk never leaves a partial file under the final name.

Temporaries are `.sct-<pid>-<random>.partial.mha` in the output folder: short (a 230-character case name still
fits the file system's 255), always MetaImage (the contract's format), and tagged with the writer's process id
so that a later run removes the leftovers of a killed one (`remove_stale_temporaries`) and never a live run's.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from preprocessing import Geometry

LOG = logging.getLogger(__name__)
TEMPORARY = re.compile(r"^\.sct-(\d+)-[0-9a-f]{8}\.partial(\.mha|\.json)$")


def temporary_name(path: Path, suffix: str = ".mha") -> Path:
    return Path(path).with_name(f".sct-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, and we write one file at a time: a leftover of an earlier process with our id
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporaries of writers that no longer run (a killed run's leftovers); returns how many."""
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for entry in entries:
        match = TEMPORARY.match(entry.name)
        if match and not _alive(int(match.group(1))):
            try:
                entry.unlink()
                removed += 1
            except OSError:
                continue
    if removed:
        LOG.info("%s: removed %d temporary file(s) left by an interrupted run", folder, removed)
    return removed


def write_image_atomic(array: np.ndarray, geometry: Geometry, path: Path, compress: bool = True) -> Path:
    """Write a (z, y, x) array with the given geometry to `path` (a .mha) via a temporary file in the same folder."""
    path = Path(path)
    image = geometry.stamp(sitk.GetImageFromArray(array))
    temporary = temporary_name(path)
    try:
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("MetaImageIO")
        writer.SetFileName(str(temporary))
        writer.SetUseCompression(compress)
        writer.Execute(image)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path
