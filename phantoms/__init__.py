"""Paired MR/CT/mask phantoms in the SynthRAD released layout (see phantoms/README.md)."""

from phantoms.generate import PhantomCase, PhantomError, Rates, case_name, generate_case

__all__ = ["PhantomCase", "PhantomError", "Rates", "case_name", "generate_case"]
