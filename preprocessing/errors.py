"""The one error type a case can fail with: a one-line message that names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class CaseError(Exception):
    """Bad input or a failed stage for one case. `str(err)` is '<file>: <problem>' on one line."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")
