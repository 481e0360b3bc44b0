"""SIGTERM and SIGINT stop the run between Python statements so that results.json is still written.

Why: a platform that stops a job sends SIGTERM, then SIGKILL after a grace period. Python's default for SIGTERM
ends the process on the spot: the finished sCTs stay, but results.json, which says which they are, never comes.
Inside `stop_on_signals`, either signal raises `Stopped` in the main thread (a BaseException, so no case's
`except Exception` swallows it); the caller records the interrupted and the not-started cases and writes
results.json. Once `disarm()` is called (while results.json is written) a further signal is only remembered.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """The run was asked to stop by a signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention for a process ended by a signal


class SignalGuard:
    """Raises Stopped on the first signal while armed; afterwards only remembers it."""

    def __init__(self) -> None:
        self.armed = True
        self.received: int | None = None

    def handle(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signum
        if self.armed:
            self.armed = False
            raise Stopped(signum)

    def disarm(self) -> None:
        self.armed = False


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalGuard]:
    """Install the handlers for the block (main thread only; elsewhere signals keep their handlers)."""
    guard = SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {signum: signal.signal(signum, guard.handle) for signum in SIGNALS}
    try:
        yield guard
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
