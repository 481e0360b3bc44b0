"""What an image file's header claims, parsed by us before any image library sees the file.

Why our own parsers: ITK trusts a header. A compressed file that claims 1500 x 1500 x 1000 voxels over 50 kB
allocates 20 GB; a 4-D or multi-channel header is allocated in full before anything can refuse it; a NRRD
`data file:` or an Analyze/NIfTI `.hdr`/`.img` pair makes it read any file on the machine (or block on a FIFO).
So every accepted format (MetaImage `.mha`/`.mhd`, NRRD `.nrrd`, NIfTI `.nii`/`.nii.gz`) is parsed here into one
`Header`: the voxel grid, the pixel type and where the data bytes are. `preprocessing.inspect` applies the same
checks to every format from it. Only MetaImage may keep its data in another file (`ElementDataFile`, checked in
inspect); NRRD with detached data, NIfTI header/image pairs, Analyze 7.5 and NIfTI-2 (which this ITK cannot
read) are refused here.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from preprocessing.errors import CaseError

MAX_HEADER_BYTES = 65536  # a header is a few hundred bytes; more is not a header
CHUNK = 1 << 20
META_ELEMENT_BYTES = {
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
NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), 2),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int"), 8),
    **dict.fromkeys(("int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int"), 8),
    **dict.fromkeys(("uint64", "uint64_t", "double"), 8),
    "float": 4,
}
NRRD_CODECS = {"raw": "raw", "gzip": "gzip", "gz": "gzip"}  # ITK's NrrdIO is built without bzip2
#: Axis kinds ITK reads as axes of the image; any other kind (vector, RGB-color, list, ...) holds components.
NRRD_GRID_KINDS = {"domain", "space", "time"}
#: NIfTI datatype code -> (bytes per component, components).
NIFTI_TYPES = {
    2: (1, 1),
    4: (2, 1),
    8: (4, 1),
    16: (4, 1),
    32: (4, 2),
    64: (8, 1),
    128: (1, 3),
    256: (1, 1),
    512: (2, 1),
    768: (4, 1),
    1024: (8, 1),
    1280: (8, 1),
    1536: (16, 1),
    1792: (8, 2),
    2048: (16, 2),
    2304: (1, 4),
}


@dataclass(frozen=True)
class ImageFacts:
    """What a file claims: every axis (x, y, z, then any more), spacing, components and bytes per component.

    spacing is () until known: NRRD and NIfTI spacing comes from orientation fields that only ITK interprets, so
    it is read through ITK once the header is known to describe a safe, scalar 3-D image.
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    components: int
    bytes_per_component: int

    @property
    def voxels(self) -> int:
        return math.prod(self.size)

    @property
    def data_bytes(self) -> int:
        return self.voxels * self.components * self.bytes_per_component


@dataclass(frozen=True)
class Header:
    """A parsed header: the grid it claims and where its data bytes must be found.

    data_name is the detached data file as the header names it (MetaImage only; None when the data follow the
    header in the same file). The data start at `offset` in that file, encoded with `codec` ("raw", "zlib" or
    "gzip"), and must decode to `claimed` bytes: exactly when `exact`, at least otherwise. The first
    `lead` of those bytes are not voxels (a .nii.gz decodes to its header first).
    """

    facts: ImageFacts
    data_name: str | None
    offset: int
    codec: str
    claimed: int
    exact: bool
    lead: int = 0


def _fail(path: Path, what: str, problem: str) -> CaseError:
    return CaseError(path, f"cannot read {what}: {problem}")


def read_head(path: Path, what: str, limit: int = MAX_HEADER_BYTES) -> bytes:
    """The first `limit` bytes of a (regular) file, any OSError as one line."""
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except OSError as err:
        raise _fail(path, what, f"cannot open the file ({err.strerror or err})") from err


# --- MetaImage ---------------------------------------------------------------------------------------------------


def _meta_fields(path: Path, what: str) -> tuple[dict[str, str], int]:
    """Key = value pairs up to ElementDataFile, and the header's length in bytes."""
    fields: dict[str, str] = {}
    offset = 0
    for raw in read_head(path, what).splitlines(keepends=True):
        offset += len(raw)
        line = raw.decode("latin-1").strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise _fail(path, what, "not a MetaImage header (line without '=')")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, offset
    raise _fail(path, what, f"not a MetaImage header (no ElementDataFile in its first {MAX_HEADER_BYTES} bytes)")


def _ints(path: Path, what: str, text: str | None, key: str, count: int | None = None) -> list[int]:
    try:
        values = [int(v) for v in (text or "").split()]
    except ValueError as err:
        raise _fail(path, what, f"header: {key} missing or not integers") from err
    if not values:
        raise _fail(path, what, f"header: {key} missing or not integers")
    if count is not None and len(values) != count:
        raise _fail(path, what, f"header: {key} has {len(values)} values, the dimension is {count}")
    return values


def _check_sizes(path: Path, what: str, key: str, size: list[int]) -> None:
    if min(size) < 1:
        raise _fail(path, what, f"header: {key} {size} has an empty axis")


def meta_header(path: Path, what: str) -> Header:
    """A MetaImage (.mha / .mhd) header."""
    fields, header_length = _meta_fields(path, what)
    ndims = _ints(path, what, fields.get("NDims"), "NDims")[0]
    size = _ints(path, what, fields.get("DimSize"), "DimSize", ndims)
    _check_sizes(path, what, "DimSize", size)
    element = fields.get("ElementType", "")
    if element not in META_ELEMENT_BYTES:
        raise _fail(path, what, f"header: ElementType {element[:40]!r} is not a MetaImage pixel type")
    channels = _ints(path, what, fields.get("ElementNumberOfChannels") or "1", "ElementNumberOfChannels")[0]
    if channels < 1:
        raise _fail(path, what, f"header: ElementNumberOfChannels {channels} must be at least 1")
    spacing_text = fields.get("ElementSpacing") or fields.get("ElementSize") or " ".join(["1"] * ndims)
    try:
        spacing = tuple(float(v) for v in spacing_text.split())
    except ValueError as err:
        raise _fail(path, what, "header: ElementSpacing is not numbers") from err
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise _fail(path, what, f"header: spacing {spacing_text[:60]} must be positive numbers")
    facts = ImageFacts(tuple(size), spacing, channels, META_ELEMENT_BYTES[element])
    compressed = fields.get("CompressedData", "False").lower() == "true"
    name = fields["ElementDataFile"]
    skip = _ints(path, what, fields.get("HeaderSize") or "0", "HeaderSize")[0]
    if name.upper() == "LOCAL":
        if skip != 0:
            raise _fail(path, what, "header: HeaderSize with local data is not supported")
        return Header(facts, None, header_length, "zlib" if compressed else "raw", facts.data_bytes, compressed)
    if skip < 0:
        raise _fail(path, what, f"header: HeaderSize {skip} (skip to the end of file) is not supported")
    return Header(facts, name, skip, "zlib" if compressed else "raw", facts.data_bytes, compressed)


# --- NRRD --------------------------------------------------------------------------------------------------------


def nrrd_header(path: Path, what: str) -> Header:
    """A NRRD (.nrrd) header with its data attached (raw or gzip)."""
    head = read_head(path, what)
    if not head.startswith(b"NRRD000"):
        raise _fail(path, what, "not a NRRD file (no NRRD magic)")
    fields: dict[str, str] = {}
    offset = None
    position = 0
    for number, raw in enumerate(head.splitlines(keepends=True)):
        position += len(raw)
        line = raw.decode("latin-1").rstrip("\r\n")
        if number == 0 or line.startswith("#") or ":=" in line.partition(": ")[0]:
            continue
        if not line.strip():
            offset = position
            break
        key, sep, value = line.partition(": ")
        if not sep:
            raise _fail(path, what, f"not a NRRD header (line {line[:40]!r} is not 'field: value')")
        fields[key.strip().lower()] = value.strip()
    for key in ("data file", "datafile"):
        if key in fields:
            raise _fail(
                path,
                what,
                f"NRRD header names a detached data file ({key}: {fields[key][:80]!r}); detached data are not "
                "accepted: give a .nrrd with its data attached, or a .mha",
            )
    if offset is None:
        raise _fail(path, what, f"not a NRRD header (no blank line ending it in its first {MAX_HEADER_BYTES} bytes)")
    for key in ("line skip", "lineskip", "byte skip", "byteskip"):
        if fields.get(key, "0").strip() not in ("0", ""):
            raise _fail(path, what, f"header: NRRD {key} {fields[key][:20]} is not supported")
    dimension = _ints(path, what, fields.get("dimension"), "dimension")[0]
    sizes = _ints(path, what, fields.get("sizes"), "sizes", dimension)
    _check_sizes(path, what, "sizes", sizes)
    element = fields.get("type", "").lower()
    if element not in NRRD_TYPE_BYTES:
        raise _fail(path, what, f"header: NRRD type {element[:40]!r} is not a supported pixel type")
    encoding = fields.get("encoding", "").lower()
    if encoding not in NRRD_CODECS:
        raise _fail(path, what, f"header: NRRD encoding {encoding[:20]!r} is not supported (raw or gzip)")
    kinds = fields.get("kinds", "").lower().split() or ["domain"] * dimension
    if len(kinds) != dimension:
        raise _fail(path, what, f"header: kinds has {len(kinds)} entries, dimension is {dimension}")
    grid_axes = [axis for axis, kind in enumerate(kinds) if kind in NRRD_GRID_KINDS]
    components = math.prod(sizes[axis] for axis in range(dimension) if axis not in grid_axes)
    # spacing () : ITK derives it from the orientation fields once the structure is known to be safe
    facts = ImageFacts(tuple(sizes[axis] for axis in grid_axes), (), components, NRRD_TYPE_BYTES[element])
    return Header(facts, None, offset, NRRD_CODECS[encoding], facts.data_bytes, False)


# --- NIfTI -------------------------------------------------------------------------------------------------------

NIFTI1_SINGLE, NIFTI1_PAIR = b"n+1\0", b"ni1\0"


def _nifti_head(path: Path, what: str) -> bytes:
    """The first 352 bytes, inflated when the file is gzip (.nii.gz), read in bounded pieces."""
    if not path.name.lower().endswith(".gz"):
        return read_head(path, what, 352)
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise _fail(path, what, f"cannot open the file ({err.strerror or err})") from err
    with handle:
        try:
            return gzip.GzipFile(fileobj=handle, mode="rb").read(352)
        except (OSError, EOFError, zlib.error) as err:
            raise _fail(path, what, f"not a gzip-compressed NIfTI file ({err})") from err


def nifti_header(path: Path, what: str) -> Header:
    """A single-file NIfTI-1 header (.nii or .nii.gz); header/image pairs, Analyze 7.5 and NIfTI-2 (which this
    ITK cannot read) are refused."""
    head = _nifti_head(path, what)
    if len(head) >= 4 and 540 in (struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]):
        raise _fail(path, what, "NIfTI-2 files are not supported (the reader reads NIfTI-1): give a NIfTI-1 or a .mha")
    if len(head) < 348:
        raise _fail(path, what, f"not a NIfTI file ({len(head)} bytes, a header has 348)")
    order = next((o for o in "<>" if struct.unpack(f"{o}i", head[:4])[0] == 348), None)
    if order is None:
        raise _fail(path, what, "not a NIfTI file (sizeof_hdr is not 348)")
    magic = head[344:348]
    if magic == NIFTI1_PAIR:
        raise _fail(
            path,
            what,
            "NIfTI header of a .hdr/.img pair (its voxels live in another file); header/image pairs are not "
            "accepted: give a single-file .nii/.nii.gz, or a .mha",
        )
    if magic != NIFTI1_SINGLE:
        raise _fail(path, what, "not a single-file NIfTI header (no n+1 magic; Analyze 7.5 is not accepted)")
    dims = struct.unpack(f"{order}8h", head[40:56])
    datatype = struct.unpack(f"{order}h", head[70:72])[0]
    vox_offset = struct.unpack(f"{order}f", head[108:112])[0]
    if not 1 <= dims[0] <= 7:
        raise _fail(path, what, f"header: dim[0] = {dims[0]} (the number of axes) must be 1 to 7")
    if datatype not in NIFTI_TYPES:
        raise _fail(path, what, f"header: NIfTI datatype {datatype} is not a supported pixel type")
    if not (math.isfinite(vox_offset) and 0 <= vox_offset < 2**40):
        raise _fail(path, what, f"header: vox_offset {vox_offset} is not a byte offset")
    axes = list(dims[1 : dims[0] + 1])
    _check_sizes(path, what, "dim", axes)
    while len(axes) > 3 and axes[-1] == 1:  # ITK drops trailing axes of length 1
        axes.pop()
    bytes_per_component, components = NIFTI_TYPES[datatype]
    if len(axes) >= 5 and all(n == 1 for i, n in enumerate(axes[3:], start=3) if i != 4):
        components *= axes[4]  # ITK reads the fifth axis (dim[5]) as the components of a vector image
        axes = axes[:3]
    facts = ImageFacts(tuple(axes), (), components, bytes_per_component)
    offset = max(int(vox_offset), 352)
    codec = "gzip" if path.name.lower().endswith(".gz") else "raw"
    # The decoded file must hold the header, the padding up to vox_offset, and the voxels.
    return Header(facts, None, 0, codec, offset + facts.data_bytes, False, lead=offset)


# --- the data bytes ----------------------------------------------------------------------------------------------


def _decoder(codec: str) -> Any:
    """A fresh decoder for one stream: zlib (MetaImage) or gzip (a .nii.gz or a NRRD may hold several members)."""
    return zlib.decompressobj() if codec == "zlib" else zlib.decompressobj(16 + zlib.MAX_WBITS)


def _decoded_pieces(handle: BinaryIO, codec: str) -> Generator[int, None, bool]:
    """Lengths of the decoded pieces (at most CHUNK bytes each, never kept) from the handle's position on; returns
    whether the last stream ended cleanly. A corrupt stream raises zlib.error."""
    decoder, ended = _decoder(codec), False
    while True:
        chunk = handle.read(CHUNK)
        if not chunk:
            return ended
        while chunk:
            if ended:
                if codec == "zlib":
                    return True  # bytes after a MetaImage's zlib stream are never read
                decoder, ended = _decoder(codec), False  # the next gzip member
            yield len(decoder.decompress(chunk, CHUNK))
            chunk = decoder.unconsumed_tail
            if decoder.eof:
                ended, chunk = True, decoder.unused_data


def decoded_length(source: Path, header: Header, path: Path, what: str) -> int:
    """Bytes the compressed data decode to, counted without keeping them, up to `claimed` (+ 1 for an exact claim):
    a CaseError when the stream is corrupt, cut short, or longer than an exact claim."""
    limit, total, ended = header.claimed, 0, False
    try:
        with open(source, "rb") as handle:
            handle.seek(header.offset)
            pieces = _decoded_pieces(handle, header.codec)
            while total <= limit if header.exact else total < limit:
                try:
                    total += next(pieces)
                except StopIteration as stop:
                    ended = stop.value
                    break
    except zlib.error as err:
        raise _fail(path, what, f"compressed data are corrupt ({err})") from err
    except OSError as err:
        raise _fail(path, what, f"compressed data are corrupt or unreadable ({err.strerror or err})") from err
    if header.exact and total > limit:
        raise _fail(path, what, f"data hold more than the {limit} bytes the header claims")
    if total < limit and not ended:
        raise _fail(path, what, f"compressed data are truncated ({total} of {limit} bytes)")
    return total
