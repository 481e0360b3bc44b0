"""SynthRAD2025 evaluation: the official image metrics, pairing of sCTs with ground truth, reports and plots.

Run ``python -m evaluation --help``. Not part of the inference container.
"""

from evaluation.metrics import mae, ms_ssim, psnr, score_case
from evaluation.pairing import pair_cases

__all__ = ["mae", "ms_ssim", "pair_cases", "psnr", "score_case"]
