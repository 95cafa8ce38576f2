"""The outcome of a backfill call, as the API returns it and ``--json`` prints it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DryRunPlan:
    table: str
    first_key: Any
    last_key: Any
    estimated_rows: int | None
    estimated_chunks: int | None
    batch_size: int
    statements: list[str]
    preview: list[dict[str, Any]]
    explain: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    """What one call did (``rows_*``, ``chunks``, ``elapsed``) and where its run stands.

    ``status`` is ``completed``, ``already completed``, ``dry run``, ``stopped``, ``paused``,
    ``cancelled`` or ``failed``.
    """

    name: str
    model: str
    strategy: str
    database: str
    status: str
    rows_scanned: int = 0
    rows_changed: int = 0
    chunks: int = 0
    elapsed: float = 0.0
    total_rows_scanned: int = 0
    total_rows_changed: int = 0
    total_chunks: int = 0
    checkpoint: Any = None
    message: str = ""
    plan: DryRunPlan | None = None

    @classmethod
    def of_run(
        cls,
        run: Any,
        *,
        database: str,
        status: str,
        done: Tally,
        elapsed: float,
        message: str,
        checkpoint: Any = None,
    ) -> Result:
        """What this call did (``done``) and the run's totals, from its ledger row ``run``."""
        totals = Tally(run.rows_scanned, run.rows_changed, run.chunks_done)
        return cls(
            run.name, run.model_label, run.strategy, database, status,
            *done.counts(), elapsed, *totals.counts(), checkpoint, message,
        )  # fmt: skip

    @property
    def rate(self) -> float:
        """Rows scanned per second in this call."""
        return self.rows_scanned / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def completed(self) -> bool:
        return self.status in ("completed", "already completed")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rate"] = round(self.rate, 1)
        data["elapsed"] = round(self.elapsed, 3)
        if self.plan is None:
            data.pop("plan")
        return data


@dataclass
class Tally:
    """What this call has done so far: rows scanned and changed, chunks committed."""

    scanned: int = 0
    changed: int = 0
    chunks: int = 0

    def counts(self) -> tuple[int, int, int]:
        """(rows scanned, rows changed, chunks), in Result's field order."""
        return self.scanned, self.changed, self.chunks

    def add(self, scanned: int, changed: int, chunks: int = 1) -> None:
        self.scanned += scanned
        self.changed += changed
        self.chunks += chunks
