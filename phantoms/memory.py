"""Keep freed memory in the process: the generator's large temporary arrays then reuse pages instead of faulting.

A full-size phantom allocates and frees dozens of arrays of 15-150 MB (label maps, fields, masks, the int64
copy `np.bincount` makes of a label image). glibc serves each with a fresh `mmap` and returns it with `munmap`,
so every one is paid again in page faults, which NumPy's huge-page advice makes expensive: on this project's
EPYC, profiled during generation, one `np.bincount` over a 17 Mvoxel label image took 0.32 s of system time
for 0.02 s of work, and nine fully randomised cases spent 3.3 s in the kernel. With `mmap` off and trimming
raised, the heap grows once to the largest case and later cases reuse it: their system time drops to about
zero and the slowest case from 3.3 to 2.4 s (`benchmarks/bench_phantoms.py`, phantoms/README.md "Speed").
Values are unchanged (the allocator only decides where arrays live; a test checks cases bit for bit). Process-wide, so only the generator's own entry
points (the CLI, the benchmark) call it; a library caller decides for its own process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

LOG = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_BYTES = 2**31 - 1  # give the heap's top back only beyond 2 GB free (the largest value mallopt takes)


def keep_freed_memory() -> bool:
    """Ask glibc to serve large arrays from the heap and keep what is freed; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        LOG.debug("no glibc mallopt here: the allocator keeps its defaults")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
    LOG.debug("allocator keeps freed memory: %s", ok)
    return ok
