"""How fast a run goes: chunk size adapting to a target time, a fixed sleep, a rate cap.

The chunk size follows a weighted average of rows per second, as pt-online-schema-change does:
``next = average_rate * target_chunk_time``, bounded by a minimum and maximum and by a growth
cap per step, so one fast chunk cannot make the next one enormous. Without a target the size is
fixed; after a lock timeout it is halved and then doubles back per chunk. The rate cap spaces
chunks so rows/second never exceeds it, without saving up credit while the run waits. Time is
injected: tests give a fake clock and never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Now = Callable[[], float]

WEIGHT = 0.3  # share of the newest chunk in the average rate
GROWTH_CAP = 2.0  # a chunk is at most this many times the previous one


class Clock(Protocol):
    """Time as a run sees it: ``clock()`` is monotonic seconds, ``clock.sleep(s)`` waits.

    The API takes one (``clock=``) so tests can run a paced run without waiting; by default
    it is ``SYSTEM_CLOCK``.
    """

    def __call__(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def __call__(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


@dataclass
class Pacer:
    batch_size: int
    target_chunk_time: float | None = None
    min_size: int = 100
    max_size: int = 50_000
    sleep: float = 0.0
    max_rate: float | None = None
    clock: Now = time.monotonic
    rate: float | None = field(default=None, init=False)
    rows: int = field(default=0, init=False)
    started: float | None = field(default=None, init=False)
    # When the rows recorded so far are paid for under the rate cap.
    due: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.size = self.batch_size
        if self.target_chunk_time:
            self.size = max(self.min_size, min(self.max_size, self.size))
        if self.max_rate:
            # A chunk larger than one second's budget would burst past the cap.
            self.size = max(1, min(self.size, int(self.max_rate)))

    def start(self) -> None:
        self.started = self.clock()

    def record(self, rows: int, seconds: float) -> None:
        """Account for a finished chunk and choose the next chunk's size."""
        self.rows += rows
        if self.max_rate:
            # Time spent waiting (replica lag, a retry) earns no credit: the cap must not
            # allow a burst afterwards, which is exactly when the database is catching up.
            began = self.clock() - seconds
            self.due = max(self.due if self.due is not None else began, began)
            self.due += rows / self.max_rate
        if rows <= 0:
            return
        if self.target_chunk_time:
            rate = rows / max(seconds, 1e-6)
            self.rate = rate if self.rate is None else WEIGHT * rate + (1 - WEIGHT) * self.rate
            wanted = int(self.rate * self.target_chunk_time)
            wanted = min(wanted, int(self.size * GROWTH_CAP))
            self.size = max(self.min_size, min(self.max_size, wanted))
        else:
            # A fixed size that was halved after a timeout grows back, doubling per chunk.
            self.size = min(self.batch_size, int(self.size * GROWTH_CAP))
        if self.max_rate:
            self.size = max(1, min(self.size, int(self.max_rate)))

    def shrink(self) -> int:
        """Halve the chunk after a lock timeout, deadlock or statement timeout."""
        self.size = max(1, self.size // 2)
        return self.size

    def delay(self) -> float:
        """Seconds to wait before the next chunk: the fixed sleep, or longer to hold the cap."""
        wait = self.sleep
        if self.due is not None:
            wait = max(wait, self.due - self.clock())
        return max(0.0, wait)
