"""What the engine reports while it runs. The edge (a command, a migration) renders these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from backfill.result import Result


@dataclass(frozen=True)
class Started:
    name: str
    model: str
    strategy: str
    database: str
    estimated_rows: int | None
    rows_done: int
    resumed: bool
    checkpoint: Any


@dataclass(frozen=True)
class ChunkDone:
    lo: Any
    hi: Any
    rows_scanned: int
    rows_changed: int
    seconds: float
    batch_size: int
    total_scanned: int
    total_changed: int
    chunks: int
    # True when it sums what other processes committed (the parent of --workers, about once a
    # second): ``count`` chunks, and lo/hi/seconds span that interval, not one chunk.
    summary: bool = False
    count: int = 1

    @classmethod
    def summary_of(
        cls,
        *,
        frontier: Any,
        since: tuple[int, int],
        chunks: int,
        seconds: float,
        batch_size: int,
        totals: tuple[int, int, int],
    ) -> ChunkDone:
        """What other processes committed in the last ``seconds``: ``since`` rows scanned and
        changed in ``chunks`` chunks, up to ``frontier``; ``totals`` the run's (scanned,
        changed, chunks)."""
        return cls(
            None,
            frontier,
            since[0],
            since[1],
            seconds,
            batch_size,
            *totals,
            summary=True,
            count=chunks,
        )


@dataclass(frozen=True)
class Waiting:
    """The run is holding back on purpose: replica lag, a rate cap."""

    reason: str
    seconds: float
    # What kind of wait, for labels and counts: "rate cap", "replica lag", "replica lag unknown".
    kind: str = "wait"


@dataclass(frozen=True)
class Retrying:
    reason: str
    attempt: int
    of: int
    delay: float
    batch_size: int
    error: str


@dataclass(frozen=True)
class Notice:
    """Something worth telling at higher verbosity (which code path a run took, and why)."""

    message: str


@dataclass(frozen=True)
class Finished:
    """The call ended: ``result.status`` says how (completed, stopped, paused, failed...)."""

    result: Result


Event = Started | ChunkDone | Waiting | Retrying | Notice | Finished


class Reporter(Protocol):
    def __call__(self, event: Event, /) -> None: ...


def ignore(event: Event) -> None:
    """The reporter that reports nothing."""


class FanOut:
    """One reporter that passes every event to several, in order: a bar, metrics, signals."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = tuple(r for r in reporters if r is not ignore)

    def __call__(self, event: Event) -> None:
        for reporter in self.reporters:
            reporter(event)
