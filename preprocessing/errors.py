"""The one error type a case can fail with: a one-line message that names the file and the problem."""

from __future__ import annotations

from pathlib import Path

#: Longest piece of user-supplied text (a file name, a region string) echoed into a log line or results.json.
MAX_ECHO = 200


def printable(text: object, limit: int = MAX_ECHO) -> str:
    """`text` on one line: control characters (a newline in a file name) escaped, and cut to `limit` characters.

    Why: an error must stay one log line, and a 1 MB region string must not be echoed whole.
    """
    value = str(text)
    cut = len(value) > limit
    value = value[:limit]
    value = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in value)
    return value + (f"... ({len(str(text))} characters)" if cut else "")


class CaseError(Exception):
    """Bad input or a failed stage for one case. `str(err)` is '<file>: <problem>' on one line."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = None if path is None else printable(path, 400)
        self.problem = " ".join(str(problem).split())
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")
