"""The guarded reader's checks: what a file is, where its data live, its shape, size and memory, before any read.

Every accepted format (MetaImage .mha/.mhd, NRRD .nrrd, NIfTI .nii/.nii.gz) goes through the same steps, in this
order: the file is a regular file with an accepted name (inside the input folder, when there is one); its header
is parsed by us (preprocessing.headers); a MetaImage's detached data file is a regular file inside the header's
own folder; the header describes a scalar 3-D image; its spacing is positive; the working memory estimated from
the header fits the budget; the spacing is plausible; the data hold the bytes the header claims (a compressed
stream is decoded in bounded chunks and counted, nothing kept). Only then does SimpleITK read the file.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import SimpleITK as sitk

from preprocessing.errors import CaseError
from preprocessing.headers import Header, ImageFacts, decoded_length, meta_header, nifti_header, nrrd_header

__all__ = ["ACCEPTED_SUFFIXES", "ImageFacts", "check_budget", "check_spacing", "image_io_for", "inspect_image"]

#: File names the reader accepts (any letter case), with the ITK ImageIO that reads each.
IMAGE_IOS = {
    ".mha": "MetaImageIO",
    ".mhd": "MetaImageIO",
    ".nii.gz": "NiftiImageIO",
    ".nii": "NiftiImageIO",
    ".nrrd": "NrrdImageIO",
}
ACCEPTED_SUFFIXES = tuple(IMAGE_IOS)
#: Plausible voxel spacing of a medical image, per axis, in mm: beyond it a header is wrong (1e-6 mm in-plane
#: collapses every slice to one value; 100 mm is no anatomy).
SPACING_RANGE_MM = (0.05, 50.0)


def _regular_file(path: Path, what: str, label: str, named: Path | None = None) -> os.stat_result:
    """stat() of a regular file; `named` is the file to name in the error (the header, for a detached data file)."""
    shown = path if named is None else named
    label = label if named is None else f"{label} {path.name!r}"
    try:
        info = os.stat(path)  # follows links: a link is fine when what it points at is a regular file
    except FileNotFoundError as err:
        if os.path.lexists(path):
            raise CaseError(shown, f"{what} {label} is a dangling symbolic link") from err
        raise CaseError(shown, f"{what} {label} not found") from err
    except OSError as err:
        raise CaseError(shown, f"cannot access {what} {label} ({err.strerror or err})") from err
    if not stat.S_ISREG(info.st_mode):
        raise CaseError(shown, f"{what} {label} is not a regular file (a device, FIFO or folder)")
    return info


def _inside(path: Path, root: Path, what: str) -> None:
    """Refuse a file that (through symbolic links) lies outside the input folder."""
    try:
        real, real_root = path.resolve(strict=True), root.resolve(strict=True)
    except (OSError, RuntimeError) as err:
        raise CaseError(path, f"cannot resolve {what} file ({getattr(err, 'strerror', None) or err})") from err
    if real != real_root and real_root not in real.parents:
        raise CaseError(
            path,
            f"{what} file is a symbolic link to {real}, outside the input folder {real_root}; "
            "links that leave the input folder are refused",
        )


def _data_file(path: Path, what: str, name: str) -> Path:
    """A MetaImage's detached data file: a plain name or relative path that resolves inside the header's folder."""
    if name.upper() == "LIST" or "%" in name or " " in name.strip():
        raise CaseError(
            path,
            f"cannot read {what}: header: ElementDataFile {name[:80]!r} (a list or pattern of files) is not supported",
        )
    relative = Path(os.fsdecode(name.encode("latin-1")))  # the very bytes ITK will open, whatever their encoding
    folder = path.absolute().parent
    if relative.is_absolute() or ".." in relative.parts:
        raise CaseError(
            path, f"cannot read {what}: header: ElementDataFile {name[:80]!r} points outside the case folder"
        )
    target = folder / relative
    try:
        real, real_folder = target.resolve(strict=False), folder.resolve()
    except (OSError, RuntimeError) as err:
        raise CaseError(path, f"cannot read {what}: header: ElementDataFile {name[:80]!r} cannot be resolved") from err
    if real_folder not in real.parents:
        raise CaseError(
            path, f"cannot read {what}: header: ElementDataFile {name[:80]!r} resolves outside the case folder"
        )
    return target


def check_shape(path: Path, what: str, size: tuple[int, ...], components: int) -> None:
    """Refuse, from the header, anything but a scalar 3-D image (a 4-D or vector header is never allocated)."""
    shown = " x ".join(map(str, size))
    if len(size) != 3:
        raise CaseError(path, f"{what} is {len(size)}-D ({shown} voxels); a 3-D volume is required")
    if components != 1:
        raise CaseError(path, f"{what} is a vector image ({components} components); a scalar image is required")


def _check_positive(path: Path, what: str, spacing: tuple[float, ...]) -> None:
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise CaseError(path, f"cannot read {what}: spacing {' x '.join(f'{s:g}' for s in spacing)} must be positive")


def check_spacing(path: Path, what: str, spacing: tuple[float, ...]) -> None:
    """Refuse spacing that is not positive, or outside the plausible range, with the numbers."""
    _check_positive(path, what, spacing)
    shown = " x ".join(f"{s:g}" for s in spacing)
    low, high = SPACING_RANGE_MM
    if not all(low <= s <= high for s in spacing):
        raise CaseError(
            path,
            f"{what} spacing {shown} mm is outside the plausible {low:g}-{high:g} mm per axis; check its header",
        )


def check_budget(path: Path, what: str, facts: ImageFacts, budget: int, working_bytes) -> None:
    """Refuse, before allocating, a case whose estimated working memory exceeds the budget."""
    need = int(working_bytes(facts))
    if need > budget:
        raise CaseError(
            path,
            f"{what} of {' x '.join(map(str, facts.size))} voxels at "
            f"{' x '.join(f'{s:g}' for s in facts.spacing)} mm needs about {need / 2**30:.1f} GB "
            f"to process, over the memory budget of {budget / 2**30:.1f} GB "
            "(--memory-budget-gb / SCT_MEMORY_BUDGET_GB)",
        )


def _suffix(path: Path) -> str | None:
    lower = path.name.lower()
    return next((s for s in ACCEPTED_SUFFIXES if lower.endswith(s) and len(lower) > len(s)), None)


def _header(path: Path, what: str, suffix: str) -> Header:
    if IMAGE_IOS[suffix] == "MetaImageIO":
        return meta_header(path, what)
    if IMAGE_IOS[suffix] == "NrrdImageIO":
        return nrrd_header(path, what)
    return nifti_header(path, what)


def _itk_facts(path: Path, what: str, facts: ImageFacts) -> ImageFacts:
    """The grid as ITK will read it (NRRD, NIfTI: spacing comes from orientation fields only ITK interprets)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(image_io_for(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise CaseError(path, f"cannot read {what}: corrupt, truncated or not an image") from err
    check_shape(path, what, tuple(reader.GetSize()), reader.GetNumberOfComponents())
    if tuple(reader.GetSize()) != facts.size:
        raise CaseError(path, f"cannot read {what}: the header's size {facts.size} is read as {reader.GetSize()}")
    return ImageFacts(facts.size, tuple(reader.GetSpacing()), 1, facts.bytes_per_component)


def inspect_image(path: Path, what: str, budget: int, working_bytes, root: Path | None = None) -> ImageFacts:
    """Check `path` before it is read (see the module's docstring); returns what its header claims.

    working_bytes(facts) estimates the bytes the pipeline needs for an image of that size and spacing. root: the
    input folder the file (and anything its links point at) must lie in; None where the user named the file.
    """
    path = Path(path)
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError as err:  # SimpleITK aborts the whole process on such a name
        raise CaseError(path, f"{what} file name is not valid UTF-8; rename the file") from err
    info = _regular_file(path, what, "file")
    suffix = _suffix(path)
    if suffix is None:
        raise CaseError(
            path, f"{what} file type is not accepted (accepted: {', '.join(ACCEPTED_SUFFIXES)}, in any letter case)"
        )
    if root is not None:
        _inside(path, Path(root), what)
    header = _header(path, what, suffix)
    source = path
    if header.data_name is not None:
        source = _data_file(path, what, header.data_name)
        info = _regular_file(source, what, "data file", named=path)
        if root is not None:
            _inside(source, Path(root), f"{what} data")
    facts = header.facts
    check_shape(path, what, facts.size, facts.components)
    if not facts.spacing:
        facts = _itk_facts(path, what, facts)
    _check_positive(path, what, facts.spacing)
    check_budget(path, what, facts, budget, working_bytes)  # before the plausibility check: a size refusal says more
    check_spacing(path, what, facts.spacing)
    if header.codec == "raw":
        held = max(info.st_size - header.offset, 0)
    else:
        held = decoded_length(source, header, path, what)
    if held < header.claimed or (header.exact and held != header.claimed):
        raise CaseError(
            path,
            f"cannot read {what}: data hold {max(held - header.lead, 0)} bytes, the header claims "
            f"{header.claimed - header.lead} "
            f"({' x '.join(map(str, facts.size))} voxels of {facts.bytes_per_component} bytes): truncated",
        )
    return facts


def image_io_for(path: Path) -> str:
    """The ITK ImageIO for a file name, whatever the case of its extension (ITK only matches lower case)."""
    suffix = _suffix(Path(path))
    return IMAGE_IOS[suffix] if suffix else ""
