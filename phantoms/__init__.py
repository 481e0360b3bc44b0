"""Paired MR/CT/mask phantoms in the SynthRAD released layout (see phantoms/README.md).

from phantoms import generate_case, write_dataset
case = generate_case("HN", 0, seed=0)            # PhantomCase: .mr, .ct, .mask (SimpleITK, int16), .info
write_dataset("data/phantoms", ["HN", "TH", "AB"], cases=20, seed=0)

The names below load on first use, so ``python -m phantoms`` can say in one line what to install when
requirements-dev.txt is missing (scipy).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PhantomCase": "phantoms.generate",
    "PhantomError": "phantoms.generate",
    "Rates": "phantoms.generate",
    "case_name": "phantoms.generate",
    "generate_case": "phantoms.generate",
    "save_overview": "phantoms.writer",
    "write_case": "phantoms.writer",
    "write_dataset": "phantoms.writer",
    "write_template": "phantoms.writer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'phantoms' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
