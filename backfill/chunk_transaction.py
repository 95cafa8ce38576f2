"""One chunk's transaction: claim the chunk, work it, record it done, in one commit.

The chunk's write and its checkpoint commit together, so a crash at any point leaves the
chunk either wholly done and recorded or wholly not done: a resumed run works it exactly once.
The chunk's timeouts are set for this transaction only.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from backfill import database
from backfill.bisection import failing_row
from backfill.chunk_book import Claim
from backfill.chunks import ChunkWork, PlannedChunk
from backfill.claims import Claims
from backfill.conf import Options
from backfill.exceptions import BackfillError
from backfill.ledger import Ledger
from backfill.models import Run
from backfill.retry import reset_if_broken
from backfill.strategies import Strategy

logger = logging.getLogger("backfill")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a chunk is processed.

    A chunk allocates tens of thousands of rows, dicts and instances that all live until it
    ends; the collector would scan them again and again (a third of iterate's CPU at large
    chunks). Reference counting still frees them when the chunk is done.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class Worked:
    """What one chunk transaction did: the claim (a chunk, none left, or a pause/cancel
    request) and, when a chunk was worked, its rows and seconds."""

    claim: Claim
    work: ChunkWork
    seconds: float


class ChunkTransaction:
    def __init__(
        self,
        strategy: Strategy,
        options: Options,
        connection: BaseDatabaseWrapper,
        ledger: Ledger,
        claims: Claims,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.strategy = strategy
        self.options = options
        self.connection = connection
        self.ledger = ledger
        self.claims = claims
        self.clock = clock
        # Rows are locked before Python reads them, where the database can lock rows and the
        # strategy reads rows into Python (an UPDATE locks the rows it writes by itself).
        self.lock = strategy.locks_rows and connection.features.has_select_for_update
        # The chunk being worked: kept after a failure, so the caller can name it.
        self.chunk: PlannedChunk | None = None

    @contextmanager
    def _session(self) -> Iterator[None]:
        opts = self.options
        with database.chunk_session(self.connection, opts.lock_timeout, opts.statement_timeout):
            yield

    def _set_timeouts(self) -> None:
        opts = self.options
        database.set_local_timeouts(self.connection, opts.lock_timeout, opts.statement_timeout)

    def __call__(self, run: Run, size: int) -> Worked:
        self.chunk = None
        started = self.clock()
        work = ChunkWork(0, 0)
        with self._session(), transaction.atomic(using=self.connection.alias):
            self._set_timeouts()
            claim = self.claims.claim(self.ledger, run, size)
            self.chunk = claim.chunk
            if claim.chunk is not None:
                with collector_paused():
                    work = self.strategy.process(claim.chunk, lock=self.lock)
                self.ledger.chunks.complete(run, claim.chunk, work, self.clock() - started)
        return Worked(claim, work, self.clock() - started)

    def refused_row(self, chunk: PlannedChunk) -> tuple[Any, DatabaseError] | None:
        """After the chunk failed with an error not worth a retry: the row the database refused
        (its pk and error), found by working prefixes of the chunk in rolled-back transactions;
        None when no single row is to blame or it cannot be found."""
        reset_if_broken(self.connection)
        try:
            with self._session():
                return failing_row(self.strategy, chunk, lock=self.lock, prepare=self._set_timeouts)
        except (DatabaseError, BackfillError) as exc:
            logger.warning("Could not narrow the failed chunk to its row: %s", exc)
            return None
