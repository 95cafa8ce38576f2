"""Planning the next chunk while this one is worked, on a second connection.

A run alone on its table plans each chunk inside the chunk's own transaction: walk the next
``size`` primary keys to find where the chunk ends, then write it. That walk is a query of its
own (an index walk that also visits the heap where the table has churned: nearly a fifth of
``backfill_update``'s time right after a previous rewrite of the table). Here it runs ahead:
as soon as chunk N is planned, a helper thread plans chunk N+1 on its own connection while
chunk N is written, and the next claim takes that plan instead of walking the keys again.

Nothing about the chunks' safety depends on where a plan comes from: a plan is only the key
range ``(lo, hi]``, and the chunk's statements read and write whatever rows that range holds
when they run, under the chunk's locks. So a plan made a moment earlier, on another
connection, gives the same rows written exactly once; only the chunk's size can differ by the
rows inserted or deleted in between. A plan ahead is used only when it starts at the chunk the
run asks for and fits the size asked for (never larger: the pacer may have shrunk it after a
slow or failed chunk; at most an eighth smaller). Any other plan, a failed one, and an empty
one (the table's end, which is checked again) are dropped, and the chunk is planned in its
transaction as before.

The helper's connection holds no row locks (a plain keyed ``SELECT``) and plans with the
chunk's timeouts, which its session does not keep. PostgreSQL and MySQL only: SQLite plans
in-process and gains nothing. ``BACKFILL["PLAN_AHEAD"] = False`` turns it off (one connection
per run).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from backfill import database, mysql
from backfill.chunks import KeyPlanner, PlannedChunk

logger = logging.getLogger("backfill")

_STOP = None
# Failed plans in a row after which a run stops planning ahead.
GIVE_UP_AFTER = 3
# Seconds close() waits for the helper thread; past it, the daemon thread ends with the process.
CLOSE_WAIT = 5.0


@dataclass(frozen=True)
class _Ahead:
    """A plan asked of the helper: the chunk after ``lo`` holding ``size`` keys."""

    lo: Any
    end: Any
    size: int
    result: Future[PlannedChunk | None]


def fits(planned: int, wanted: int) -> bool:
    """Whether a plan ahead of ``planned`` keys may serve a chunk of ``wanted``: never larger
    (the pacer shrinks the chunk after a timeout), and within an eighth below (the pacer's
    size drifts from chunk to chunk; a fixed size grows back after a timeout by doubling)."""
    return wanted - wanted // 8 <= planned <= wanted


def available(connection: BaseDatabaseWrapper) -> bool:
    """Whether a second connection can plan ahead for runs on ``connection``."""
    return database.is_postgres(connection) or mysql.is_mysql(connection)


class PlanAhead:
    """Plans chunk N+1 on a helper thread's own connection while chunk N is worked."""

    def __init__(
        self,
        planner: KeyPlanner,
        *,
        lock_timeout: float | None,
        statement_timeout: float | None,
    ) -> None:
        self.planner = planner
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.ahead: _Ahead | None = None
        # Plans taken from the helper (how often it paid), and its failures in a row.
        self.used = 0
        self.failures = 0
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Touched by the helper thread only.
        self._side: KeyPlanner | None = None

    def next_chunk(self, lo: Any, end: Any, size: int) -> PlannedChunk | None:
        """The chunk after ``lo`` holding at most ``size`` keys, as ``KeyPlanner.next_chunk``;
        then start planning the one after it."""
        planned = self._take(lo, end, size)
        if planned is None:
            planned = self.planner.next_chunk(lo, end, size)
        else:
            self.used += 1
        if planned is not None and planned.hi != end:
            self._send(planned.hi, end, size)
        return planned

    def close(self) -> None:
        """Close the helper's connection, once a plan in flight (milliseconds) is done."""
        self.ahead = None
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join(CLOSE_WAIT)
            self._thread = None

    def _take(self, lo: Any, end: Any, size: int) -> PlannedChunk | None:
        """The helper's plan when it is the chunk asked for; None when it is not, failed or is
        empty (the caller then plans the chunk itself)."""
        ahead = self.ahead
        if ahead is None or (ahead.lo, ahead.end) != (lo, end) or not fits(ahead.size, size):
            # Kept while it runs, so that _send does not queue another walk behind it.
            return None
        self.ahead = None
        try:
            # Bounded by the same timeouts as planning in the chunk's transaction.
            planned = ahead.result.result()
        except Exception as exc:
            # Whatever the helper met (a lost connection, a timeout), the chunk plans itself
            # in its transaction and meets its own errors and retries there.
            self._failed(exc)
            return None
        self.failures = 0
        return planned

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        logger.debug("Planning ahead failed (%s); planning the chunk in its transaction.", exc)
        if self.failures == GIVE_UP_AFTER:
            logger.warning(
                "Planning ahead failed %d times in a row (last: %s); this run plans each chunk "
                "in its transaction from now on.",
                self.failures,
                exc,
            )

    def _send(self, lo: Any, end: Any, size: int) -> None:
        if self.failures >= GIVE_UP_AFTER:
            return  # no server slot for a second connection, say: one connection it is
        if self.ahead is not None and not self.ahead.result.done():
            return  # one plan in flight at a time
        result: Future[PlannedChunk | None] = Future()

        def plan() -> None:
            try:
                result.set_result(self._plan(lo, end, size))
            except BaseException as exc:
                result.set_exception(exc)

        self.ahead = _Ahead(lo, end, size, result)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name="backfill-plan-ahead", daemon=True
            )
            self._thread.start()
        self._jobs.put(plan)

    # -- the helper thread --------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while (job := self._jobs.get()) is not _STOP:
                job()
        finally:
            if self._side is not None:
                with suppress(Exception):
                    self._side.connection.close()
                self._side = None

    def _plan(self, lo: Any, end: Any, size: int) -> PlannedChunk | None:
        side = self._side_planner()
        connection = side.connection
        timeouts = (self.lock_timeout, self.statement_timeout)
        try:
            # The chunk's timeouts, for this plan only: MySQL's saved and restored around it,
            # PostgreSQL's SET LOCAL in a transaction of its own that only reads (a pooled
            # connection must not keep them).
            with database.chunk_session(connection, *timeouts):
                connection.set_autocommit(False)
                try:
                    database.set_local_timeouts(connection, *timeouts)
                    return side.next_chunk(lo, end, size)
                finally:
                    connection.rollback()
                    connection.set_autocommit(True)
        except Exception:
            # A connection in an unknown state is not reused: the next plan opens a new one.
            with suppress(Exception):
                connection.close()
            raise

    def _side_planner(self) -> KeyPlanner:
        """A planner on the helper's own connection: the run's database settings, opened in
        this thread."""
        if self._side is None:
            main = connections[self.planner.connection.alias]  # the wrapper, not a proxy
            side = type(main)(main.settings_dict, alias=main.alias)
            self._side = KeyPlanner(self.planner.model, side)
        return self._side
