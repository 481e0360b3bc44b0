"""Paired MR/CT/mask phantoms in the SynthRAD released layout (see phantoms/README.md).

from phantoms import generate_case, write_dataset
case = generate_case("HN", 0, seed=0)            # PhantomCase: .mr, .ct, .mask (SimpleITK, int16), .info
write_dataset("data/phantoms", ["HN", "TH", "AB"], cases=20, seed=0)
"""

from phantoms.generate import PhantomCase, PhantomError, Rates, case_name, generate_case
from phantoms.writer import save_overview, write_case, write_dataset, write_template

__all__ = [
    "PhantomCase",
    "PhantomError",
    "Rates",
    "case_name",
    "generate_case",
    "save_overview",
    "write_case",
    "write_dataset",
    "write_template",
]
