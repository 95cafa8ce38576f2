"""The chunk loop: it only sequences. Per turn: ask the gates whether to go on, work one chunk
in its transaction, count it, report it, pace. A failed chunk is retried with a smaller size
when the error is transient, and fails the run (naming the row when it can) when it is not.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from django.conf import settings
from django.db import DatabaseError

from backfill import database, events
from backfill.chunk_transaction import ChunkTransaction, Worked
from backfill.chunks import PlannedChunk
from backfill.conf import get_setting
from backfill.context import StartedRun
from backfill.exceptions import ChunkFailed, RowFailed, one_line
from backfill.expressions import describe_error
from backfill.gates import Gates
from backfill.models import Run
from backfill.pacing import Pacer
from backfill.result import Result, Tally
from backfill.retry import backoff, reset_if_broken
from backfill.vacuum import Vacuum

logger = logging.getLogger("backfill")


def chunk_name(chunk: PlannedChunk | None) -> str:
    return f"Chunk after pk {chunk.lo if chunk else '?'!r}"


class ChunkLoop:
    def __init__(self, started: StartedRun) -> None:
        self.s = started
        opts = started.options
        assert opts.batch_size is not None
        self.pacer = Pacer(
            batch_size=opts.batch_size,
            target_chunk_time=opts.target_chunk_time,
            min_size=int(get_setting("MIN_BATCH_SIZE")),
            max_size=int(get_setting("MAX_BATCH_SIZE")),
            sleep=opts.sleep or 0.0,
            max_rate=opts.max_rate,
            clock=started.clock,
        )
        self.gates = Gates(
            opts,
            stop=started.stop,
            clock=started.clock,
            sleep=started.sleep,
            report=started.report,
            retried=started.retried,
            ledger=started.ledger,
            run=started.run,
        )
        self.transaction = ChunkTransaction(
            started.strategy,
            opts,
            started.connection,
            started.ledger,
            started.claims,
            clock=started.clock,
        )
        self.vacuum = Vacuum(
            started.strategy.queryset.model,
            started.connection,
            every=opts.vacuum_every,
            estimated_rows=started.run.estimated_rows,
            shared=started.claims.shared,
            report=started.report,
            clock=started.clock,
        )
        run = started.run
        self.base = Tally(run.rows_scanned, run.rows_changed, run.chunks_done)
        self.done = Tally()
        self.attempt = 0
        self.started = started.clock()

    @classmethod
    def work(cls, started: StartedRun) -> Result:
        return cls(started)()

    def __call__(self) -> Result:
        s = self.s
        self.pacer.start()
        s.announce()
        end_key = s.ledger.planner.from_text(s.run.pk_end)
        while True:
            elapsed = s.clock() - self.started
            stop = self.gates.stop_reason(elapsed)
            if stop:
                s.endings.interrupt(Run.Status.STOPPED, stop, self.done, elapsed)
            if self.gates.hold_for_replicas(self.started):
                continue  # stopped while waiting: the check above ends the run
            worked = self._attempt()
            if worked is None:
                continue
            self.attempt = 0
            claim = worked.claim
            if claim.requested:
                status = Run.Status.CANCELLED if claim.requested == "cancel" else Run.Status.PAUSED
                s.endings.interrupt(status, claim.requested, self.done, s.clock() - self.started)
            if claim.chunk is None:
                break
            self._record(worked, claim.chunk)
            # No pause after the chunk that reached the run's last key: nothing follows it.
            self.gates.pace(self.pacer, last=s.claims.is_last(claim.chunk, end_key))
        finished = s.retried(s.ledger.finish, s.run)
        message = (
            f"Completed run {s.identity.name!r}."
            if finished
            else "No chunks left for this worker; other workers of "
            f"{s.identity.name!r} are finishing."
        )
        return s.endings.finished("completed", self.done, s.clock() - self.started, message)

    def _attempt(self) -> Worked | None:
        """One chunk's transaction; None when the loop must turn again (a retry, or a chunk
        planned for parallel workers to claim)."""
        s = self.s
        try:
            worked = self.transaction(s.run, self.pacer.size)
            idle = worked.claim.chunk is None and not worked.claim.requested
            if idle and s.claims.plan_more(s.ledger, s.run, self.pacer.size):
                return None
            return worked
        except ChunkFailed as exc:
            s.endings.fail(str(exc), self.done, self.started)
            raise
        except DatabaseError as exc:
            self._retry_or_fail(exc, self.transaction.chunk)
            return None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            # Code of the application's (a save() signal, a custom field) that raised
            # something other than a database error: the chunk rolled back; fail the run
            # with one line instead of leaving it running behind a traceback.
            self._fail(
                exc,
                f"{chunk_name(self.transaction.chunk)} failed: {type(exc).__name__}: "
                f"{one_line(exc)}. Its chunk was rolled back; earlier chunks are committed. "
                "Re-run the same command to resume.",
            )

    def _retry_or_fail(self, exc: DatabaseError, chunk: PlannedChunk | None) -> None:
        """A chunk failed with a database error: retry it smaller after a backoff when the error
        is transient and retries are left; else fail the run (naming the row when it can)."""
        s = self.s
        reason = database.transient_reason(exc)
        retries = int(s.options.retries or 0)
        self.attempt += 1
        if reason is None and chunk is not None:
            self._fail_on_row(chunk, exc)
        if reason is None or self.attempt > retries:
            why = reason or "not a transient error"
            self._fail(
                exc,
                f"{chunk_name(chunk)} failed ({why}) after {self.attempt} "
                f"attempt(s): {type(exc).__name__}: {one_line(exc)}. Earlier chunks are "
                "committed; re-run the same command to resume.",
            )
        reset_if_broken(s.connection)
        if reason in database.SHRINK_REASONS:
            self.pacer.shrink()
            s.retried.quietly(s.claims.shrink, s.ledger, chunk)
        delay = backoff(self.attempt)
        size = self.pacer.size
        detail = f"{type(exc).__name__}: {str(exc).strip()}"
        s.report(events.Retrying(reason, self.attempt, retries, delay, size, detail))
        logger.warning(
            "Retrying chunk in %.1f s (%s, attempt %d/%d, batch %d)",
            delay,
            reason,
            self.attempt,
            retries,
            size,
        )
        s.retried.quietly(s.ledger.wait, s.run, f"retrying after {reason} (attempt {self.attempt})")
        self.gates.pause(delay)

    def _fail(self, cause: BaseException, message: str) -> NoReturn:
        """Record the run failed with ``message`` and raise ChunkFailed from ``cause``."""
        self.s.endings.fail(message, self.done, self.started)
        raise ChunkFailed(message) from cause

    def _fail_on_row(self, chunk: PlannedChunk, error: DatabaseError) -> None:
        """Raise RowFailed naming the row the database refused, when it can be found."""
        found = self.transaction.refused_row(chunk)
        if found is None:
            return
        pk, row_error = found
        label = self.s.identity.model_label
        message = (
            f"{label} pk={pk!r} was refused by the database: "
            f"{type(row_error).__name__}: {describe_error(row_error)}. Its chunk was rolled "
            "back. Earlier chunks are committed; fix the row or the backfill and re-run the same "
            "command to resume."
        )
        self.s.endings.fail(message, self.done, self.started)
        raise RowFailed(message, pk=pk) from error

    def _record(self, worked: Worked, chunk: PlannedChunk) -> None:
        """Count a committed chunk, report it, and do what follows one: heartbeat, VACUUM."""
        s = self.s
        self.done.add(chunk.keys, worked.work.rows_changed)
        self.pacer.record(chunk.keys, worked.seconds)
        total = self.base.scanned + self.done.scanned
        s.report(
            events.ChunkDone(
                chunk.lo,
                chunk.hi,
                chunk.keys,
                worked.work.rows_changed,
                worked.seconds,
                self.pacer.size,
                total,
                self.base.changed + self.done.changed,
                self.base.chunks + self.done.chunks,
            )
        )
        s.retried.quietly(s.ledger.clear_wait, s.run)
        # With DEBUG=True Django keeps the last 9,000 statements, each with its parameters
        # (whole arrays here): drop them per chunk so memory stays flat.
        if settings.DEBUG and not s.connection.force_debug_cursor:
            s.connection.queries_log.clear()
        self.gates.keep_alive()
        self.vacuum.after(total)
