"""Typed errors of the training side: library code raises them, only the command-line `main()`s exit."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A training or export run cannot go on (missing data or checkpoint, wrong kind, failed parity); one line."""
