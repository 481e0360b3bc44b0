"""Hand-written image files for the hardening and fuzz tests: headers that lie, data that break, paths that escape.

Everything is generated in the test's own folder and kept tiny, so that a test that reads what it must not (a
FIFO, a file outside the case folder) hangs or fails visibly instead of passing by luck.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sct_testing import body_phantom

MET_TYPES = {
    np.dtype(np.int16): "MET_SHORT",
    np.dtype(np.uint8): "MET_UCHAR",
    np.dtype(np.float32): "MET_FLOAT",
    np.dtype(np.float64): "MET_DOUBLE",
    np.dtype(np.int32): "MET_INT",
}


def header(array: np.ndarray, **fields: object) -> dict[str, str]:
    """The fields of a plain 3-D MetaImage header for `array` (z, y, x); keyword arguments replace or drop (None)."""
    z, y, x = array.shape[-3:]
    base = {
        "ObjectType": "Image",
        "NDims": "3",
        "BinaryData": "True",
        "BinaryDataByteOrderMSB": "False",
        "CompressedData": "False",
        "TransformMatrix": "1 0 0 0 1 0 0 0 1",
        "Offset": "0 0 0",
        "ElementSpacing": "1 1 3",
        "DimSize": f"{x} {y} {z}",
        "ElementType": MET_TYPES[array.dtype],
        "ElementDataFile": "LOCAL",
    }
    for key, value in fields.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, str) and value.startswith("{dims"):  # "{dims+5}": the array's DimSize, 5 more slices
            base[key] = f"{x} {y} {z + int(value[5:-1])}"
        else:
            base[key] = str(value)
    if "ElementDataFile" in base:  # it must be the last line
        base["ElementDataFile"] = base.pop("ElementDataFile")
    return base


def write_meta(
    path: Path, array: np.ndarray, data: bytes | None = None, compress: bool = False, **fields: object
) -> Path:
    """Write a MetaImage with the given header fields; `data` replaces the array's bytes (after compression)."""
    payload = np.ascontiguousarray(array).tobytes()
    if compress:
        payload = zlib.compress(payload)
        fields = {"CompressedData": "True", "CompressedDataSize": len(payload), **fields}
    if data is not None:
        payload = data
    text = "".join(f"{key} = {value}\n" for key, value in header(array, **fields).items())
    path.parent.mkdir(parents=True, exist_ok=True)
    local = header(array, **fields).get("ElementDataFile", "LOCAL") == "LOCAL"
    path.write_bytes(text.encode("latin-1") + (payload if local else b""))
    return path


def good_pair(shape=(6, 20, 18), seed=0) -> tuple[np.ndarray, np.ndarray]:
    mr, mask = body_phantom(shape, seed)
    return mr.astype(np.int16), mask.astype(np.uint8)


def _corrupt_stream(array: np.ndarray) -> bytes:
    payload = bytearray(zlib.compress(np.ascontiguousarray(array).tobytes()))
    middle = len(payload) // 2
    payload[middle - 32 : middle + 32] = bytes(64)
    return bytes(payload)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# Each entry: which file breaks ("mr" or "mask"), and a function (folder, name, mr, mask) -> the broken file's path.
# The function writes the broken file under images/mri or images/body with the case's name; the other file is good.
Breaker = Callable[[Path, str, np.ndarray, np.ndarray], Path]


def _mr(folder: Path, name: str) -> Path:
    return folder / "images" / "mri" / name


def _mask(folder: Path, name: str) -> Path:
    return folder / "images" / "body" / name


def _detached(target: str) -> Breaker:
    def make(folder, name, mr, mask):
        return write_meta(_mr(folder, name), mr, ElementDataFile=target)

    return make


def _outside_raw(folder, name, mr, mask):
    outside = folder.parent / "outside_secret.raw"
    outside.write_bytes(np.ascontiguousarray(mr).tobytes())
    return write_meta(_mr(folder, name), mr, ElementDataFile="../../../outside_secret.raw")


def _symlink_out(folder, name, mr, mask):
    outside = folder.parent / "outside_link_target.raw"
    outside.write_bytes(np.ascontiguousarray(mr).tobytes())
    link = _mr(folder, name).with_suffix(".raw")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    return write_meta(_mr(folder, name), mr, ElementDataFile=link.name)


def _fifo_data(folder, name, mr, mask):
    _mr(folder, name).parent.mkdir(parents=True, exist_ok=True)
    fifo = _fifo(_mr(folder, name).with_suffix(".raw"))
    return write_meta(_mr(folder, name), mr, ElementDataFile=fifo.name)


def _fifo_outside(folder, name, mr, mask):
    fifo = _fifo(folder.parent / f"outside_{name}.fifo")
    return write_meta(_mr(folder, name), mr, ElementDataFile=str(fifo))


def _fifo_image(folder, name, mr, mask):
    _mr(folder, name).parent.mkdir(parents=True, exist_ok=True)
    return _fifo(_mr(folder, name))


def _dangling(folder, name, mr, mask):
    path = _mr(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(folder / "nowhere" / "gone.mha")
    return path


def _bytes(content: bytes, suffix: str = ".mha") -> Breaker:
    def make(folder, name, mr, mask):
        path = _mr(folder, name).with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    return make


def _fields(compress: bool = False, data: Callable[[np.ndarray], bytes] | None = None, array=None, **fields) -> Breaker:
    def make(folder, name, mr, mask):
        source = mr if array is None else array(mr)
        return write_meta(
            _mr(folder, name), source, data=None if data is None else data(source), compress=compress, **fields
        )

    return make


def _mask_fields(
    compress: bool = False, data: Callable[[np.ndarray], bytes] | None = None, array=None, **fields
) -> Breaker:
    def make(folder, name, mr, mask):
        source = mask if array is None else array(mask)
        return write_meta(
            _mask(folder, name), source, data=None if data is None else data(source), compress=compress, **fields
        )

    return make


def _mask_missing(folder, name, mr, mask):
    return _mask(folder, name)  # never written


def _mask_outside(folder, name, mr, mask):
    outside = folder.parent / f"outside_mask_{name}.raw"
    outside.write_bytes(np.ascontiguousarray(mask).tobytes())
    return write_meta(_mask(folder, name), mask, ElementDataFile=str(outside))


def _dims(mr: np.ndarray, dz: int = 0) -> str:
    z, y, x = mr.shape
    return f"{x} {y} {z + dz}"


def _nan(mr: np.ndarray) -> np.ndarray:
    out = mr.astype(np.float32)
    out[2, 5, 5] = np.nan
    return out


def _inf(mr: np.ndarray) -> np.ndarray:
    out = mr.astype(np.float32)
    out[1, 3, 3] = np.inf
    return out


def _huge(mr: np.ndarray) -> np.ndarray:
    return mr.astype(np.float64) * 1e298


def write_nrrd(path: Path, array: np.ndarray, payload: bytes | None = None, **fields: object) -> Path:
    """A NRRD file with its data attached (unless a data file field is given); fields replace or drop (None)."""
    z, y, x = array.shape[-3:]
    base = {
        "type": {np.dtype(np.int16): "short", np.dtype(np.uint8): "uchar", np.dtype(np.float32): "float"}[array.dtype],
        "dimension": "3",
        "space": "left-posterior-superior",
        "sizes": f"{x} {y} {z}",
        "space directions": "(1,0,0) (0,1,0) (0,0,3)",
        "kinds": "domain domain domain",
        "endian": "little",
        "encoding": "raw",
        "space origin": "(0,0,0)",
    }
    for key, value in fields.items():
        key = key.replace("_", " ")
        if value is None:
            base.pop(key, None)
        else:
            base[key] = str(value)
    text = "NRRD0004\n" + "".join(f"{key}: {value}\n" for key, value in base.items())
    detached = "data file" in base or "datafile" in base
    if payload is None:
        payload = np.ascontiguousarray(array).tobytes()
        if base["encoding"] == "gzip":
            payload = _gzip(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("latin-1") + (b"" if detached else b"\n" + payload))
    return path


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def write_nifti(
    path: Path,
    array: np.ndarray,
    spacing=(1.0, 1.0, 3.0),
    magic: bytes | None = None,
    dims: tuple[int, ...] | None = None,
    datatype: int | None = None,
    data: bytes | None = None,
) -> Path:
    """A NIfTI-1 file written by SimpleITK, then patched: magic, dim[] and datatype, and the voxels replaced by
    `data` (the header and its 4 extension bytes kept); gzip-compressed when the name ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    plain = path.with_name(path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name)
    sitk.WriteImage(image, str(plain))
    content = bytearray(plain.read_bytes())
    if magic is not None:
        content[344:348] = magic
    if dims is not None:
        content[40:56] = struct.pack("<8h", len(dims), *dims, *([1] * (7 - len(dims))))
    if datatype is not None:
        content[70:72] = struct.pack("<h", datatype)
    if data is not None:
        content = content[:352] + data
    if path.name.endswith(".gz"):
        plain.unlink()
        path.write_bytes(_gzip(bytes(content)))
    else:
        path.write_bytes(bytes(content))
    return path


def _times(matrix: list[int], vector: int) -> int:
    """A 32 x 32 matrix over GF(2) (a list of columns) times a vector."""
    total, index = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[index]
        vector >>= 1
        index += 1
    return total


def crc32_after_zeros(crc: int, count: int) -> int:
    """zlib.crc32(data + bytes(count)) from crc = zlib.crc32(data), without touching the zeros: a zero byte changes
    the CRC register linearly, so `count` of them are one matrix power (by squaring), as zlib's crc32_combine does."""
    operator = [0xEDB88320] + [1 << bit for bit in range(31)]  # one zero bit
    for _ in range(3):  # one zero byte
        operator = [_times(operator, column) for column in operator]
    register = crc ^ 0xFFFFFFFF
    while count:
        if count & 1:
            register = _times(operator, register)
        count >>= 1
        operator = [_times(operator, column) for column in operator]
    return register ^ 0xFFFFFFFF


def adler32_after_zeros(adler: int, count: int) -> int:
    """zlib.adler32(data + bytes(count)) from adler = zlib.adler32(data): zeros leave A and add count x A to B."""
    low, high = adler & 0xFFFF, adler >> 16
    return (((high + count * low) % 65521) << 16) | low


@functools.lru_cache(maxsize=4)
def _flushed_zeros(count: int) -> bytes:
    """A self-contained raw deflate block of `count` zeros (a full flush: it refers to nothing before it)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(bytes(count)) + compressor.flush(zlib.Z_FULL_FLUSH)


def deflate_zeros(prefix: bytes, zeros: int, wrapper: str) -> bytes:
    """A zlib or gzip stream of `prefix` followed by `zeros` zero bytes, built without compressing or checksumming
    them: one self-contained deflate block of 16 MB of zeros, repeated, so a claimed 1.5 GB costs a few MB and
    well under a second."""
    full, rest = divmod(zeros, 1 << 24)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = head + _flushed_zeros(1 << 24) * full + _flushed_zeros(rest) + b"\x03\x00"  # an empty final block
    if wrapper == "gzip":
        crc = crc32_after_zeros(zlib.crc32(prefix), zeros)
        size = (len(prefix) + zeros) & 0xFFFFFFFF
        return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + struct.pack("<II", crc, size)
    return b"\x78\xda" + body + struct.pack(">I", adler32_after_zeros(zlib.adler32(prefix), zeros))


def _nrrd(payload: Callable[[np.ndarray], bytes] | None = None, suffix: str = ".nrrd", **fields) -> Breaker:
    def make(folder, name, mr, mask):
        return write_nrrd(_mr(folder, name).with_suffix(suffix), mr, None if payload is None else payload(mr), **fields)

    return make


def _nrrd_data_file(where: str) -> Breaker:
    """A NRRD whose `data file:` names raw voxels: beside it ('inside'), outside the input folder by absolute
    path ('absolute') or by '..' ('parent', under the 'datafile' spelling), or a FIFO beside it ('fifo')."""

    def make(folder, name, mr, mask):
        header = _mr(folder, name).with_suffix(".nrrd")
        header.parent.mkdir(parents=True, exist_ok=True)
        raw = np.ascontiguousarray(mr).tobytes()
        if where == "inside":
            (header.parent / f"{header.stem}.raw").write_bytes(raw)
            return write_nrrd(header, mr, data_file=f"{header.stem}.raw")
        if where == "fifo":
            _fifo(header.parent / f"{header.stem}.raw")
            return write_nrrd(header, mr, data_file=f"{header.stem}.raw")
        outside = folder.parent / f"outside_{header.stem}.raw"
        outside.write_bytes(raw)
        if where == "absolute":
            return write_nrrd(header, mr, data_file=str(outside))
        return write_nrrd(header, mr, datafile=f"../../../{outside.name}")

    return make


def _nifti_pair(magic: bytes) -> Breaker:
    """A .nii whose header says it is one of a .hdr/.img pair (or Analyze 7.5): its voxels would come from the
    .img beside it, here a link to a file outside the input folder."""

    def make(folder, name, mr, mask):
        header = _mr(folder, name).with_suffix(".nii")
        write_nifti(header, mr, magic=magic)
        outside = folder.parent / f"outside_{header.stem}.img"
        outside.write_bytes(np.ascontiguousarray(mr).tobytes())
        header.with_suffix(".img").symlink_to(outside)
        return header

    return make


def _nifti(suffix: str = ".nii", data: Callable[[np.ndarray], bytes] | None = None, **patch) -> Breaker:
    def make(folder, name, mr, mask):
        path = _mr(folder, name).with_name(f"{Path(name).stem}{suffix}")
        return write_nifti(path, mr, data=None if data is None else data(mr), **patch)

    return make


def _folder_named_like(which: str) -> Breaker:
    def make(folder, name, mr, mask):
        path = (_mr if which == "mr" else _mask)(folder, name)
        path.mkdir(parents=True)
        (path / "inner.mha").write_bytes(b"a folder is not an image")
        return path

    return make


def _link_out(which: str) -> Breaker:
    """The MR (or mask) is a symbolic link to a good image outside the input folder."""

    def make(folder, name, mr, mask):
        outside = write_meta(folder.parent / f"outside_{which}_{name}", mr if which == "mr" else mask)
        path = (_mr if which == "mr" else _mask)(folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(outside)
        return path

    return make


def _not_utf8(folder, name, mr, mask):
    """An MR and its mask whose file names hold a byte that is not UTF-8 (SimpleITK cannot even be given them)."""
    paths = []
    for where, array in ((_mr, mr), (_mask, mask)):
        written = write_meta(where(folder, f"utf8_{name}"), array)
        target = os.fsdecode(bytes(written.parent) + b"/bad\xffname_" + name.encode())
        os.rename(written, target)
        paths.append(Path(target))
    return paths[0]


def _data_file_bytes(folder, name, mr, mask):
    """ElementDataFile names a byte that is not UTF-8: 'ÿ.raw' as Latin-1. A harmless file of that name in UTF-8
    sits beside a link, under the raw byte, to data outside the input folder: ITK opens the raw byte."""
    header = _mr(folder, name)
    header.parent.mkdir(parents=True, exist_ok=True)
    raw = np.ascontiguousarray(mr).tobytes()
    (header.parent / f"\xff{header.stem}.raw").write_bytes(raw)  # the decoy, named in UTF-8
    outside = folder.parent / f"outside_bytes_{header.stem}.raw"
    outside.write_bytes(raw)
    os.symlink(outside, os.fsencode(header.parent) + b"/\xff" + header.stem.encode() + b".raw")
    return write_meta(header, mr, ElementDataFile=f"\xff{header.stem}.raw")


def _constant_inside(mr: np.ndarray) -> np.ndarray:
    """An MR that is 250 wherever the body is, with structure only outside it."""
    out = mr.copy()
    _, body = good_pair(mr.shape)
    out[body > 0] = 250
    out[body == 0] = np.arange(np.count_nonzero(body == 0)) % 97
    return out


#: name -> (which file breaks, how, words the one-line error must contain)
FUZZ_CASES: dict[str, tuple[str, Breaker, str]] = {
    "uncompressed claims more slices": ("mr", _fields(DimSize="{dims+5}"), "truncated"),
    "DimSize with two values": ("mr", _fields(DimSize="18 20"), "DimSize"),
    "DimSize zero": ("mr", _fields(DimSize="18 20 0"), "empty axis"),
    "DimSize negative": ("mr", _fields(DimSize="18 -20 6"), "empty axis"),
    "DimSize not numbers": ("mr", _fields(DimSize="a b c"), "DimSize"),
    "NDims missing": ("mr", _fields(NDims=None), "NDims"),
    "NDims not a number": ("mr", _fields(NDims="three"), "NDims"),
    "unknown ElementType": ("mr", _fields(ElementType="MET_FOO"), "ElementType"),
    "ElementType missing": ("mr", _fields(ElementType=None), "ElementType"),
    "ElementDataFile missing": ("mr", _fields(ElementDataFile=None), "MetaImage header"),
    "ElementDataFile absolute": ("mr", _detached("/etc/passwd"), "outside the case folder"),
    "ElementDataFile parent path": ("mr", _outside_raw, "outside the case folder"),
    "ElementDataFile symlink outside": ("mr", _symlink_out, "outside the case folder"),
    "ElementDataFile is a FIFO": ("mr", _fifo_data, "not a regular file"),
    "ElementDataFile FIFO outside": ("mr", _fifo_outside, "outside the case folder"),
    "ElementDataFile missing file": ("mr", _detached("nothere.raw"), "not found"),
    "ElementDataFile LIST": ("mr", _detached("LIST"), "not supported"),
    "ElementDataFile pattern": ("mr", _detached("slice%03d.raw 1 6 1"), "not supported"),
    "binary garbage": ("mr", _bytes(bytes(range(256)) * 8), "cannot read MR"),
    "empty file": ("mr", _bytes(b""), "cannot read MR"),
    "JSON text": ("mr", _bytes(b'{"not": "an image"}\n'), "cannot read MR"),
    "header line without =": ("mr", _bytes(b"ObjectType = Image\nthis is not a header\n"), "MetaImage header"),
    "100 kB of header": ("mr", _bytes(b"Comment = " + b"x" * 100_000 + b"\n"), "MetaImage header"),
    "MR is a FIFO": ("mr", _fifo_image, "not a regular file"),
    "dangling MR link": ("mr", _dangling, "dangling symbolic link"),
    "corrupt zlib stream": ("mr", _fields(compress=True, data=_corrupt_stream), "corrupt"),
    "compressed claims more slices": ("mr", _fields(compress=True, DimSize="{dims+6}"), "truncated"),
    "compressed claims fewer slices": ("mr", _fields(compress=True, DimSize="{dims-2}"), "more than"),
    "compressed file cut in half": (
        "mr",
        _fields(compress=True, data=lambda a: zlib.compress(a.tobytes())[:40]),
        "truncated",
    ),
    "compressed flag over raw data": ("mr", _fields(data=lambda a: a.tobytes(), CompressedData="True"), "corrupt"),
    "compressed 1500 x 1500 x 1000 claim": ("mr", _fields(compress=True, DimSize="1500 1500 1000"), "memory budget"),
    "uncompressed 10^6 cube claim": ("mr", _fields(DimSize="1000000 1000000 1000000"), "memory budget"),
    "overflowing DimSize": ("mr", _fields(DimSize="99999999999999999999 2 2"), "memory budget"),
    "zero spacing": ("mr", _fields(ElementSpacing="0 1 3"), "spacing"),
    "negative spacing": ("mr", _fields(ElementSpacing="1 -1 3"), "spacing"),
    "spacing not numbers": ("mr", _fields(ElementSpacing="x y z"), "ElementSpacing"),
    "three channels": (
        "mr",
        _fields(ElementNumberOfChannels=3, data=lambda a: np.repeat(a, 3).tobytes()),
        "vector image",
    ),
    "NaN voxel": ("mr", _fields(array=_nan), "NaN/inf"),
    "inf voxel": ("mr", _fields(array=_inf), "NaN/inf"),
    "float64 near 1e300": ("mr", _fields(array=_huge), "float32"),
    "2-D header": (
        "mr",
        _fields(NDims=2, DimSize="18 120", ElementSpacing="1 1", TransformMatrix="1 0 0 1", Offset="0 0"),
        "2-D",
    ),
    "4-D header": (
        "mr",
        _fields(
            NDims=4,
            DimSize="18 20 3 2",
            ElementSpacing="1 1 3 1",
            TransformMatrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1",
            Offset="0 0 0 0",
        ),
        "4-D",
    ),
    "nifti garbage": ("mr", _bytes(b"\x5c\x01" + bytes(600)), "cannot read MR"),
    "mask missing": ("mask", _mask_missing, "mask missing"),
    "mask empty": ("mask", _mask_fields(array=lambda m: np.zeros_like(m)), "mask is empty"),
    "mask elsewhere": ("mask", _mask_fields(Offset="5000 5000 5000"), "does not overlap"),
    "mask corrupt stream": ("mask", _mask_fields(compress=True, data=_corrupt_stream), "corrupt"),
    "mask truncated": ("mask", _mask_fields(DimSize="{dims+3}"), "truncated"),
    "mask data outside": ("mask", _mask_outside, "outside the case folder"),
    "mask 2-D": (
        "mask",
        _mask_fields(NDims=2, DimSize="18 120", ElementSpacing="1 1", TransformMatrix="1 0 0 1", Offset="0 0"),
        "2-D",
    ),
    "mask NaN": ("mask", _mask_fields(array=lambda m: np.where(m > 0, np.float32(1), np.float32(np.nan))), "NaN/inf"),
    "mask vector": (
        "mask",
        _mask_fields(ElementNumberOfChannels=2, data=lambda a: np.repeat(a, 2).tobytes()),
        "vector image",
    ),
    "mask huge claim": ("mask", _mask_fields(compress=True, DimSize="1500 1500 1000"), "memory budget"),
    # --- round two (issue 35): every format's detached data -----------------------------------------------------
    "NRRD data file beside it": ("mr", _nrrd_data_file("inside"), "detached data are not accepted"),
    "NRRD data file absolute outside": ("mr", _nrrd_data_file("absolute"), "detached data are not accepted"),
    "NRRD datafile climbing out": ("mr", _nrrd_data_file("parent"), "detached data are not accepted"),
    "NRRD data file is a FIFO": ("mr", _nrrd_data_file("fifo"), "detached data are not accepted"),
    "NRRD data file LIST": ("mr", _nrrd(data_file="LIST"), "detached data are not accepted"),
    ".nii of a .hdr/.img pair": ("mr", _nifti_pair(b"ni1\0"), "header/image pairs are not accepted"),
    ".nii without NIfTI magic (Analyze)": ("mr", _nifti_pair(b"\0\0\0\0"), "Analyze 7.5 is not accepted"),
    # --- header-based sizes and budgets for every format ------------------------------------------------------
    "NRRD raw data cut short": ("mr", _nrrd(payload=lambda a: a.tobytes()[:1000]), "data hold 1000 bytes"),
    "NRRD gzip stream corrupt": ("mr", _nrrd(payload=_corrupt_stream, encoding="gzip"), "compressed data are"),
    "NRRD ascii encoding": ("mr", _nrrd(payload=lambda a: b"1 2 3", encoding="ascii"), "encoding 'ascii'"),
    "NIfTI data cut short": (
        "mr",
        _nifti(data=lambda a: a.tobytes()[:500]),
        "data hold 500 bytes, the header claims 4320",
    ),
    "NIfTI .nii.gz cut short": ("mr", _nifti(".nii.gz", data=lambda a: a.tobytes()[:500]), "data hold 500 bytes"),
    "NRRD 4-D claim, gzip": ("mr", _nrrd(encoding="gzip", dimension=4, sizes="18 20 6 9000", kinds=None), "is 4-D"),
    "NRRD vector kinds claim": (
        "mr",
        _nrrd(
            dimension=4,
            sizes="64 18 20 6",
            kinds="vector domain domain domain",
            **{"space directions": "none (1,0,0) (0,1,0) (0,0,3)"},
        ),
        "vector image (64 components)",
    ),
    "MetaImage 4-D compressed claim": ("mr", _fields(compress=True, NDims=4, DimSize="18 20 6 9000"), "is 4-D"),
    "MetaImage 64 channels claim": ("mr", _fields(compress=True, ElementNumberOfChannels=64), "vector image"),
    # --- spacing and contrast ---------------------------------------------------------------------------------
    "in-plane spacing 1e-6 mm": ("mr", _fields(ElementSpacing="1e-06 1e-06 3"), "outside the plausible 0.05-50"),
    "slice spacing 60 mm": ("mr", _fields(ElementSpacing="1 1 60"), "outside the plausible 0.05-50"),
    "NIfTI spacing 0.01 mm": ("mr", _nifti(spacing=(0.01, 1.0, 3.0)), "0.01 x 1 x 3 mm is outside"),
    "MR all zero": ("mr", _fields(array=np.zeros_like), "zero variance inside the body mask"),
    "MR constant 100": ("mr", _fields(array=lambda a: np.full_like(a, 100)), "all 864 voxels are 100"),
    "MR constant inside the body only": ("mr", _fields(array=_constant_inside), "are 250"),
    # --- the mask's grid --------------------------------------------------------------------------------------
    "mask shifted 12 mm": ("mask", _mask_fields(Offset="12 0 0"), "up to 12 MR voxels"),
    "mask at 1.5 x the spacing": ("mask", _mask_fields(ElementSpacing="1.5 1.5 4.5"), "on another grid"),
    "mask with x and y swapped": ("mask", _mask_fields(TransformMatrix="0 1 0 1 0 0 0 0 1"), "on another grid"),
    "mask one slice more": (
        "mask",
        _mask_fields(array=lambda m: np.concatenate([m, m[-1:]])),
        "size 18 x 20 x 7 vs 18 x 20 x 6",
    ),
    "mask a slice off in z": ("mask", _mask_fields(Offset="0 0 3"), "origin (0 0 3)"),
    # --- what discovery sees, and links out of the input folder -----------------------------------------------
    "MR is a folder": ("mr", _folder_named_like("mr"), "not a regular file"),
    "mask is a folder": ("mask", _folder_named_like("mask"), "not a regular file"),
    "MR links out of the input folder": ("mr", _link_out("mr"), "outside the input folder"),
    "mask links out of the input folder": ("mask", _link_out("mask"), "outside the input folder"),
    "MR name not UTF-8": ("mr", _not_utf8, "file name is not valid UTF-8"),
    "ElementDataFile bytes not UTF-8": ("mr", _data_file_bytes, "outside the case folder"),
    "NRRD bzip2 encoding": ("mr", _nrrd(payload=lambda a: b"BZh9", encoding="bzip2"), "encoding 'bzip2' is not"),
    "NIfTI-2 header": ("mr", _bytes(struct.pack("<i", 540) + b"n+2\0\r\n\x1a\n" + bytes(600), ".nii"), "NIfTI-2"),
}

#: Masks slightly off the MR's grid: the case runs, the mask is resampled, and results.json says so.
#: name -> (how the mask is written, words its warning must contain)
WARNED_CASES: dict[str, tuple[Breaker, str]] = {
    "mask shifted 0.3 voxel": (_mask_fields(Offset="0.3 0 0"), "by up to 0.30 MR voxel"),
    "mask spacing 0.1% off": (_mask_fields(ElementSpacing="1.001 1 3"), "by up to 0.02 MR voxel"),
}


def build_fuzz_folder(folder: Path) -> tuple[dict[str, tuple[str, Path]], dict[str, str]]:
    """One template folder holding every FUZZ_CASES case (case_NN + its mask), every WARNED_CASES case (warn_NN) and
    two good cases (good.mha, and linked.mha: a link to an MR elsewhere inside the input folder).

    Returns FUZZ_CASES name -> (the MR's file name, the broken file) and WARNED_CASES name -> the MR's file name.
    """
    mr, mask = good_pair()
    made = {}
    for number, (name, (which, breaker, _)) in enumerate(FUZZ_CASES.items()):
        case = f"case_{number:02d}.mha"
        if which == "mr":
            write_meta(_mask(folder, case), mask)
        else:
            write_meta(_mr(folder, case), mr)
        broken = breaker(folder, case, mr, mask)
        made[name] = (broken.name if which == "mr" else case, broken)
    warned = {}
    for number, (name, (breaker, _)) in enumerate(WARNED_CASES.items()):
        case = f"warn_{number:02d}.mha"
        write_meta(_mr(folder, case), mr)
        breaker(folder, case, mr, mask)
        warned[name] = case
    write_meta(_mr(folder, "good.mha"), mr)
    write_meta(_mask(folder, "good.mha"), mask)
    # links that stay inside the input folder are followed: this case runs
    target = write_meta(folder / "elsewhere" / "linked_target.mha", mr)
    _mr(folder, "linked.mha").symlink_to(Path("..", "..", "elsewhere", target.name))
    write_meta(_mask(folder, "linked.mha"), mask)
    (folder / "region.json").write_text('"Thorax"')
    return made, warned
