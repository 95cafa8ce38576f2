"""Clean stops (OS signals, not Django's: those are in backfill.lifecycle): SIGINT and SIGTERM ask
the run to stop after the chunk in flight."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopFlag:
    """Set by a signal (or a test, or a parent process); checked between chunks."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.aborting = False

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def __bool__(self) -> bool:
        return self.reason is not None


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """Turn SIGINT/SIGTERM into ``flag`` while the block runs (main thread only).

    A second SIGINT while stopping raises KeyboardInterrupt at once; the chunk in flight
    then rolls back, which is still consistent and resumable.
    """
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if flag and signum == signal.SIGINT:
            # Once: a third Ctrl-C must not interrupt the rollback and the clean-up that the
            # second one started.
            if not flag.aborting:
                flag.aborting = True
                raise KeyboardInterrupt
            return
        flag.set(name)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


COMMANDS = frozenset({"backfill_update", "backfill_iterate", "backfill_cursor"})
# Set by a signal that arrives while Django starts a backfill command (see catch_early).
EARLY = StopFlag()


def catch_early() -> None:
    """When this process is ``manage.py backfill_*``, turn a SIGINT/SIGTERM that arrives while
    Django loads its apps into ``EARLY`` instead of a KeyboardInterrupt traceback; the command
    then exits 3 before it starts anything. Any other process keeps its handlers untouched.
    """
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        return
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        EARLY.set(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(sig, handle)
