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


@dataclass(frozen=True)
class Waiting:
    """The run is holding back on purpose: replica lag, a rate cap."""

    reason: str
    seconds: float


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
    result: Result


Event = Started | ChunkDone | Waiting | Retrying | Notice | Finished


class Reporter(Protocol):
    def __call__(self, event: Event) -> None: ...


def ignore(event: Event) -> None:
    """The reporter that reports nothing."""
