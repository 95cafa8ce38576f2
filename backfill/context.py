"""A started run, as the work that follows its start sees it: what it runs, where its ledger
is, how it reports, and how it ends. The Runner builds it once the ledger has the run; the
chunk loop (``backfill.loop``) and the parent of ``--workers`` (``backfill.workers``) work it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from django.db.backends.base.base import BaseDatabaseWrapper

from backfill import database, events
from backfill.claims import Claims
from backfill.conf import Options, get_setting
from backfill.endings import Endings
from backfill.identity import RunIdentity
from backfill.ledger import Ledger
from backfill.models import Run
from backfill.result import Result
from backfill.retry import Retrier
from backfill.stopping import StopFlag
from backfill.strategies import Strategy


@dataclass(frozen=True)
class StartedRun:
    strategy: Strategy
    options: Options
    identity: RunIdentity
    connection: BaseDatabaseWrapper
    ledger: Ledger
    run: Run
    resumed: bool
    claims: Claims
    retried: Retrier
    endings: Endings
    report: events.Reporter
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    stop: StopFlag

    def announce(self) -> None:
        """Report the start of the work, and what this run reads and cannot honour."""
        self.report(
            events.Started(
                self.identity.name,
                self.identity.model_label,
                self.identity.strategy,
                database.describe(self.connection.alias),
                self.run.estimated_rows,
                self.run.rows_scanned,
                self.resumed,
                self.ledger.checkpoint(self.run),
            )
        )
        for note in [*self.strategy.notes(), *self.safety_notes()]:
            self.report(events.Notice(note))

    def safety_notes(self) -> list[str]:
        """Say which PostgreSQL-only safety options this run cannot honour, and why."""
        notes = []
        vendor = self.connection.vendor
        postgres = database.is_postgres(self.connection)
        if self.options.max_replica_lag and not get_setting("REPLICA_ALIASES") and not postgres:
            notes.append(
                f"--max-replica-lag is not checked on {vendor}: it reads PostgreSQL's "
                "pg_stat_replication (or the replicas in BACKFILL['REPLICA_ALIASES'])."
            )
        if self.options.vacuum_every and not postgres:
            notes.append(f"--vacuum-every is not run on {vendor}: it VACUUMs PostgreSQL tables.")
        elif self.options.vacuum_every and self.claims.shared:
            notes.append("--vacuum-every is not run with --workers; let autovacuum keep up.")
        return notes


class Work(Protocol):
    """What works a started run until it ends: returns its Result or raises (Interrupted,
    ChunkFailed, RunBusy)."""

    def __call__(self, started: StartedRun) -> Result: ...
