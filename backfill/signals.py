"""Clean stops: SIGINT and SIGTERM ask the run to stop after the chunk in flight."""

from __future__ import annotations

import signal
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
