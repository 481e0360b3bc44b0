"""Checks on an image file before SimpleITK allocates or reads anything: size, data integrity, where data live.

Why here and not after the read: ITK trusts a header. A compressed MetaImage that claims 1500 x 1500 x 1000
voxels over 50 kB allocates 20 GB; a corrupt zlib stream or a header that claims more voxels than its data hold
is read "successfully" with garbage or uninitialised memory; an `ElementDataFile` may name any file on the
machine (or a FIFO that blocks forever). So for MetaImage files (.mha / .mhd) the header is parsed here, the
data file must be a regular file inside the header's own folder, and the data must hold exactly the claimed
number of bytes (a compressed stream is inflated in bounded chunks and counted, nothing kept). For other
formats (NIfTI, NRRD) SimpleITK reads the header only, and the claimed size is checked against the budget.
"""

from __future__ import annotations

import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from preprocessing.errors import CaseError

MAX_HEADER_BYTES = 65536  # a MetaImage header is a few hundred bytes; more is not a header
ELEMENT_BYTES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 8,
    "MET_ULONG": 8,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageFacts:
    """What a file claims, checked against what it holds."""

    size: tuple[int, ...]  # x, y, z (as ITK orders it)
    spacing: tuple[float, ...]
    components: int
    bytes_per_component: int

    @property
    def voxels(self) -> int:
        return int(np.prod(self.size, dtype=np.int64))


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


def _parse_meta_header(path: Path, what: str) -> tuple[dict[str, str], int]:
    """Key = value pairs up to ElementDataFile, and the header's length in bytes."""
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES)
    fields: dict[str, str] = {}
    offset = 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        line = raw.decode("latin-1").strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise CaseError(path, f"cannot read {what}: not a MetaImage header (line without '=')")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, offset
    raise CaseError(
        path, f"cannot read {what}: not a MetaImage header (no ElementDataFile in its first {MAX_HEADER_BYTES} bytes)"
    )


def _ints(path: Path, what: str, fields: dict[str, str], key: str, count: int | None = None) -> list[int]:
    try:
        values = [int(v) for v in fields[key].split()]
    except (KeyError, ValueError) as err:
        raise CaseError(path, f"cannot read {what}: header: {key} missing or not integers") from err
    if count is not None and len(values) != count:
        raise CaseError(path, f"cannot read {what}: header: {key} has {len(values)} values, NDims says {count}")
    return values


def _data_file(path: Path, what: str, name: str) -> Path:
    """The detached data file: a plain name or relative path that resolves inside the header's folder."""
    if name.upper() == "LIST" or "%" in name or " " in name.strip():
        raise CaseError(
            path,
            f"cannot read {what}: header: ElementDataFile {name[:80]!r} (a list or pattern of files) is not supported",
        )
    relative = Path(name)
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


def _inflated_length(source: Path, offset: int, limit: int, path: Path, what: str) -> int:
    """Bytes a zlib stream inflates to (reading at most limit + 1 of them), or a CaseError when it is corrupt."""
    inflater = zlib.decompressobj()
    total = 0
    with open(source, "rb") as handle:
        handle.seek(offset)
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            try:
                data = inflater.decompress(chunk, CHUNK)
                total += len(data)
                while inflater.unconsumed_tail and total <= limit:
                    data = inflater.decompress(inflater.unconsumed_tail, CHUNK)
                    total += len(data)
            except zlib.error as err:
                raise CaseError(path, f"cannot read {what}: compressed data are corrupt ({err})") from err
            if total > limit or inflater.eof:
                break
    if total > limit:
        raise CaseError(path, f"cannot read {what}: data hold more than the {limit} bytes the header claims")
    if not inflater.eof:
        raise CaseError(path, f"cannot read {what}: compressed data are truncated ({total} of {limit} bytes)")
    return total


def _meta_facts(path: Path, what: str, budget: int, working_bytes) -> ImageFacts:
    fields, header_length = _parse_meta_header(path, what)
    ndims = _ints(path, what, fields, "NDims")[0]
    size = _ints(path, what, fields, "DimSize", ndims)
    if min(size) < 1:
        raise CaseError(path, f"cannot read {what}: header: DimSize {size} has an empty axis")
    element = fields.get("ElementType", "")
    if element not in ELEMENT_BYTES:
        raise CaseError(path, f"cannot read {what}: header: ElementType {element[:40]!r} is not a MetaImage pixel type")
    components = int(fields.get("ElementNumberOfChannels", "1") or 1)
    spacing_text = fields.get("ElementSpacing") or fields.get("ElementSize") or " ".join(["1"] * ndims)
    try:
        spacing = tuple(float(v) for v in spacing_text.split())
    except ValueError as err:
        raise CaseError(path, f"cannot read {what}: header: ElementSpacing is not numbers") from err
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise CaseError(path, f"cannot read {what}: header: spacing {spacing_text[:60]} must be positive numbers")
    facts = ImageFacts(tuple(size), spacing, components, ELEMENT_BYTES[element])
    if ndims == 3 and components == 1:  # other shapes are rejected with their own message after the read
        check_budget(path, what, facts, budget, working_bytes)
    claimed = facts.voxels * components * facts.bytes_per_component
    name = fields["ElementDataFile"]
    if name.upper() == "LOCAL":
        source, offset = path, header_length
        if int(fields.get("HeaderSize", "0") or 0) != 0:
            raise CaseError(path, f"cannot read {what}: header: HeaderSize with local data is not supported")
    else:
        source, offset = _data_file(path, what, name), int(fields.get("HeaderSize", "0") or 0)
        if offset < 0:
            raise CaseError(
                path, f"cannot read {what}: header: HeaderSize {offset} (skip to the end of file) is not supported"
            )
    available = _regular_file(source, what, "data file", named=None if source == path else path).st_size - offset
    if fields.get("CompressedData", "False").lower() == "true":
        inflated = _inflated_length(source, offset, claimed, path, what)
        if inflated != claimed:
            raise CaseError(
                path,
                f"cannot read {what}: data hold {inflated} bytes, the header claims {claimed} "
                f"({' x '.join(map(str, size))} {element}): truncated",
            )
    elif available < claimed:
        raise CaseError(
            path,
            f"cannot read {what}: data hold {max(available, 0)} bytes, the header claims {claimed} "
            f"({' x '.join(map(str, size))} {element}): truncated",
        )
    return facts


def _other_facts(path: Path, what: str, budget: int, working_bytes) -> ImageFacts:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise CaseError(path, f"cannot read {what}: corrupt, truncated or not an image") from err
    pixel_bytes = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2, sitk.sitkFloat32: 4}
    facts = ImageFacts(
        tuple(reader.GetSize()),
        tuple(reader.GetSpacing()),
        reader.GetNumberOfComponents(),
        pixel_bytes.get(reader.GetPixelID(), 8),
    )
    if not all(np.isfinite(v) and v > 0 for v in facts.spacing):
        raise CaseError(path, f"cannot read {what}: spacing {facts.spacing} must be positive numbers")
    if len(facts.size) == 3 and facts.components == 1:
        check_budget(path, what, facts, budget, working_bytes)
    return facts


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


def inspect_image(path: Path, what: str, budget: int, working_bytes) -> ImageFacts:
    """Check `path` before it is read: a regular file, a sane header, data that match it, size within budget.

    working_bytes(facts) estimates the bytes the pipeline needs for an image of that size and spacing.
    """
    path = Path(path)
    _regular_file(path, what, "file")
    lower = path.name.lower()
    if lower.endswith((".mha", ".mhd")):
        return _meta_facts(path, what, budget, working_bytes)
    return _other_facts(path, what, budget, working_bytes)


def image_io_for(path: Path) -> str:
    """The ITK ImageIO for a file name, whatever the case of its extension (ITK only matches lower case)."""
    lower = Path(path).name.lower()
    if lower.endswith((".mha", ".mhd")):
        return "MetaImageIO"
    if lower.endswith((".nii", ".nii.gz")):
        return "NiftiImageIO"
    if lower.endswith((".nrrd", ".nhdr")):
        return "NrrdImageIO"
    return ""
