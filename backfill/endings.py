"""How a call ends: the run's status recorded in the ledger, one Result built and reported.

Every way out of a run goes through here (completed, stopped, paused, cancelled, failed,
aborted), so the closing message and the totals read the same whichever process ended it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn

from django.db import DatabaseError

from backfill import events
from backfill.exceptions import Interrupted
from backfill.identity import RunIdentity
from backfill.ledger import Ledger
from backfill.models import Run
from backfill.result import Result, Tally
from backfill.retry import Retrier, reset_if_broken

logger = logging.getLogger("backfill")


class Endings:
    def __init__(
        self,
        identity: RunIdentity,
        using: str,
        ledger: Ledger,
        run: Run,
        *,
        retried: Retrier,
        report: events.Reporter,
        clock: Callable[[], float],
    ) -> None:
        self.identity = identity
        self.using = using
        self.ledger = ledger
        self.run = run
        self.retried = retried
        self.report = report
        self.clock = clock

    @property
    def name(self) -> str:
        return self.identity.name

    def bare(self, status: str, elapsed: float, message: str, done: Tally | None = None) -> Result:
        """A Result when the ledger cannot be read (the database is away)."""
        scanned, changed, chunks = (done or Tally()).counts()
        identity = self.identity
        return Result(
            identity.name, identity.model_label, identity.strategy, self.using, status,
            rows_scanned=scanned, rows_changed=changed, chunks=chunks, elapsed=elapsed,
            message=message,
        )  # fmt: skip

    def result(self, status: str, done: Tally, elapsed: float, message: str) -> Result:
        """This call's Result with the run's totals and checkpoint, read from the ledger."""
        fresh = self.retried(self.ledger.refresh, self.run)
        checkpoint = None if fresh.status == Run.Status.COMPLETED else self.ledger.checkpoint(fresh)
        return Result.of_run(
            fresh,
            database=self.using,
            status=status,
            done=done,
            elapsed=elapsed,
            message=message,
            checkpoint=checkpoint,
        )

    def finished(self, status: str, done: Tally, elapsed: float, message: str) -> Result:
        """The Result of a call that ends normally, reported."""
        result = self.result(status, done, elapsed, message)
        self.report(events.Finished(result))
        return result

    def settle(self, status: str, error: str = "") -> None:
        """Record how the run ended, retried; logged when the database stays away."""
        try:
            self.retried(self.ledger.stop, self.run, status, error)
        except DatabaseError as exc:
            logger.warning("Could not record run %r as %s: %s", self.name, status, exc)
            reset_if_broken(self.retried.connection)

    def fail(self, message: str, done: Tally, started: float, *, settle: bool = True) -> Result:
        """Record the failure on the run and report the call's end (the caller raises)."""
        logger.error(message)
        if settle:
            self.settle(Run.Status.FAILED, message)
        elapsed = self.clock() - started
        try:
            result = self.result("failed", done, elapsed, message)
        except DatabaseError:
            reset_if_broken(self.retried.connection)
            result = self.bare("failed", elapsed, message, done)
        self.report(events.Finished(result))
        return result

    def interrupt(self, status: str, why: str, done: Tally, elapsed: float) -> NoReturn:
        """Stopped, paused or cancelled between chunks: record it, report it, raise."""
        self.settle(status)
        fresh = self.retried(self.ledger.refresh, self.run)
        by = f" by {fresh.requested_by}" if fresh.requested_by else ""
        if status == Run.Status.CANCELLED:
            message = (
                f"Cancelled{by}. Run {self.name!r} will not resume; pass --restart to start "
                "it over."
            )
        elif status == Run.Status.PAUSED:
            message = f"Paused{by}. Re-run the same command to resume run {self.name!r}."
        elif fresh.status == Run.Status.RUNNING:
            # Another live process works the run (Ledger.stop): it stays running.
            message = (
                f"Stopped by {why} after {done.chunks} chunk(s); checkpoint saved. Run "
                f"{self.name!r} goes on in the other processes working it; re-run the same "
                "command to join them."
            )
        else:
            message = (
                f"Stopped by {why} after {done.chunks} chunk(s); checkpoint saved. Re-run the "
                f"same command to resume run {self.name!r}."
            )
        result = self.finished(str(status), done, elapsed, message)
        raise Interrupted(message, result=result)

    def abort(self, elapsed: float) -> NoReturn:
        """A second SIGINT: the chunk in flight rolled back; still an exit 3 with the hint."""
        message = (
            "Aborted by a second SIGINT; the chunk in flight was rolled back, the checkpoint "
            "is after the last committed chunk. Re-run the same command to resume run "
            f"{self.name!r}."
        )
        self.settle(Run.Status.STOPPED)
        try:
            fresh = self.retried(self.ledger.refresh, self.run)
            done = Tally(
                fresh.rows_scanned - self.run.rows_scanned,
                fresh.rows_changed - self.run.rows_changed,
                fresh.chunks_done - self.run.chunks_done,
            )
            result = self.result("stopped", done, elapsed, message)
        except DatabaseError:
            result = self.bare("stopped", elapsed, message)
        raise Interrupted(message, result=result) from None
