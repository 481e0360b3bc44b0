"""SynthRAD2025 evaluation: the official image metrics, pairing of sCTs with ground truth, reports and plots.

Run ``python -m evaluation --help``. Not part of the inference container. The names below load on first use, so
``python -m evaluation`` can say in one line what to install when requirements-dev.txt is missing (scipy).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "mae": "evaluation.metrics",
    "ms_ssim": "evaluation.metrics",
    "psnr": "evaluation.metrics",
    "score_case": "evaluation.metrics",
    "pair_cases": "evaluation.pairing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
