"""Hand-written MetaImage files for the hardening and fuzz tests: headers that lie, data that break, paths that escape.

Everything is generated in the test's own folder and kept tiny, so that a test that reads what it must not (a
FIFO, a file outside the case folder) hangs or fails visibly instead of passing by luck.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

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


def _bytes(content: bytes) -> Breaker:
    def make(folder, name, mr, mask):
        path = _mr(folder, name)
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
}


def build_fuzz_folder(folder: Path) -> dict[str, tuple[str, Path]]:
    """One template folder holding every FUZZ_CASES case (case_NN.mha + its mask); name -> (case file, broken file)."""
    mr, mask = good_pair()
    made = {}
    for number, (name, (which, breaker, _)) in enumerate(FUZZ_CASES.items()):
        case = f"case_{number:02d}.mha"
        if which == "mr":
            write_meta(_mask(folder, case), mask)
        else:
            write_meta(_mr(folder, case), mr)
        made[name] = (case, breaker(folder, case, mr, mask))
    (folder / "region.json").write_text('"Thorax"')
    return made
