"""Atomic image writing: a crash or a full disk never leaves a partial file under the final name."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from preprocessing import Geometry


def write_image_atomic(array: np.ndarray, geometry: Geometry, path: Path, compress: bool = True) -> Path:
    """Write a (z, y, x) array with the given geometry to `path` via a temporary file in the same folder."""
    path = Path(path)
    image = geometry.stamp(sitk.GetImageFromArray(array))
    suffix = "".join(path.suffixes) or ".mha"
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        sitk.WriteImage(image, str(temporary), useCompression=compress)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path
