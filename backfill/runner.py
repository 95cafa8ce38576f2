"""The engine: plan a chunk, run it in one short transaction, checkpoint, pace, report, repeat."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

from django.conf import settings
from django.db import DatabaseError, connections, transaction

from backfill import database, events
from backfill.bisection import failing_row
from backfill.chunks import Chunk, KeyPlanner
from backfill.conf import Options, get_setting
from backfill.exceptions import (
    BackfillError,
    ChunkFailed,
    InsideTransaction,
    Interrupted,
    RowFailed,
    one_line,
)
from backfill.expressions import describe_error
from backfill.ledger import Ledger
from backfill.models import Run
from backfill.pacing import Pacer
from backfill.result import DryRunPlan, Result
from backfill.signals import StopFlag, stop_on_signals
from backfill.strategies import ChunkWork, Strategy
from backfill.validation import (
    NAME_LENGTH,
    check_filter,
    check_name,
    check_options,
    check_workers,
)

logger = logging.getLogger("backfill")
T = TypeVar("T")

HEARTBEAT_EVERY = 5.0
WAIT_SLICE = 1.0


def default_name(strategy: Strategy, spec: dict[str, Any]) -> str:
    """A stable run name from the command, model, transform and filters."""
    where = str(strategy.queryset.query.where) if strategy.queryset.query.where else ""
    digest = hashlib.sha1(
        json.dumps([strategy.kind, spec, where], sort_keys=True, default=str).encode()
    ).hexdigest()[:8]
    what = spec.get("transform") or "set " + ",".join(spec.get("set", {}))
    head = f"{strategy.kind} {strategy.queryset.model._meta.label} {what}"
    # Cut the readable part, never the digest: it is what tells two long names apart.
    if len(head) > NAME_LENGTH - len(digest) - 1:
        head = head[: NAME_LENGTH - len(digest) - 2] + "…"
    return f"{head} {digest}"


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


class Runner:
    """Runs one strategy over its queryset as a resumable run.

    ``run()`` returns a Result when the run completed (or was already completed). It raises
    BadInput before writing anything, Interrupted when stopped early (signal, max runtime,
    pause, cancel), ChunkFailed/TransformFailed when a chunk kept failing, RunBusy when another
    process holds the run.
    """

    def __init__(
        self,
        strategy: Strategy,
        options: Options,
        *,
        reporter: events.Reporter = events.ignore,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stop: StopFlag | None = None,
        parallel: bool = False,
    ) -> None:
        self.strategy = strategy
        self.options = options.resolved()
        self.report = reporter
        self.clock = clock
        self._sleep = sleep
        self.stop = stop if stop is not None else StopFlag()
        self.using = strategy.queryset.db
        self.connection = connections[self.using]
        self.model = strategy.queryset.model
        self.parallel = parallel or self.options.workers > 1 or self.options.join
        self.description = strategy.describe(None)
        # An empty --name is refused (check_name), not silently replaced by a derived one.
        self.name = (
            self.options.name
            if self.options.name is not None
            else default_name(strategy, self.description.spec)
        )
        # The filter is part of what a run does: resuming a named run with another filter
        # would skip or add rows, so it is stored and compared like the transform.
        where = strategy.queryset.query.where
        self.spec = {**self.description.spec, "filter": str(where) if where else ""}

    # -- entry point --------------------------------------------------------------------

    def run(self) -> Result:
        # A server that cannot be reached at all is a setup problem, reported at once; one lost
        # later (a restart) is waited for (see _retried).
        self.connection.ensure_connection()
        check_options(self.options)
        check_name(self.name, given=self.options.name is not None)
        check_workers(self.options.workers, self.connection, count_connections=False)
        if self.connection.in_atomic_block:
            raise InsideTransaction(
                "A backfill commits chunk by chunk and cannot run inside a transaction "
                "(atomic block). In a migration set `atomic = False` on the Migration class; "
                "elsewhere call it outside transaction.atomic()."
            )
        check_filter(self.strategy.queryset)
        planner = KeyPlanner(self.model, self.connection)
        if self.options.dry_run:
            return self.dry_run(planner)
        ledger = Ledger(self.using, planner, lease=float(get_setting("LEASE_SECONDS")))
        assert self.options.batch_size is not None
        run, resumed = self._retried(
            ledger.start,
            name=self.name,
            strategy=self.strategy.kind,
            model_label=self.model._meta.label,
            spec=self.spec,
            restart=self.options.restart,
            parallel=self.parallel,
            batch_size=self.options.batch_size,
            exact_count=self.options.count == "exact",
        )
        try:
            if run.status == Run.Status.COMPLETED:
                result = self._result(
                    ledger,
                    run,
                    "already completed",
                    0,
                    0,
                    0,
                    0.0,
                    f"Run {self.name!r} already completed; nothing to do. "
                    "Pass --restart to run it again from the beginning.",
                )
                self.report(events.Finished(result))
                return result
            started = self.clock()
            with stop_on_signals(self.stop):
                try:
                    return self._work(ledger, run, resumed)
                except KeyboardInterrupt:
                    self._abort(ledger, run, self.clock() - started)
        finally:
            try:
                self._retried(ledger.leave, run)
            except DatabaseError:
                logger.warning(
                    "Could not deregister worker of run %r; its lease will expire.", self.name
                )

    # -- the loop -----------------------------------------------------------------------

    def _work(self, ledger: Ledger, run: Run, resumed: bool) -> Result:
        opts = self.options
        assert opts.batch_size is not None
        pacer = Pacer(
            batch_size=opts.batch_size,
            target_chunk_time=opts.target_chunk_time,
            min_size=int(get_setting("MIN_BATCH_SIZE")),
            max_size=int(get_setting("MAX_BATCH_SIZE")),
            sleep=opts.sleep or 0.0,
            max_rate=opts.max_rate,
            clock=self.clock,
        )
        lock = self.strategy.kind != "update" and self.connection.features.has_select_for_update
        started = self.clock()
        pacer.start()
        base_scanned, base_changed, base_chunks = (
            run.rows_scanned,
            run.rows_changed,
            run.chunks_done,
        )
        self._announce(ledger, run, resumed)
        scanned = changed = chunks = attempt = 0
        retries = int(opts.retries or 0)
        last_beat = started
        next_vacuum = self._vacuum_step(run)
        end_key = ledger.planner.from_text(run.pk_end)
        while True:
            elapsed = self.clock() - started
            stop = self._stop_reason(elapsed)
            if stop:
                return self._interrupt(
                    ledger, run, Run.Status.STOPPED, stop, scanned, changed, chunks, elapsed
                )
            if self._wait_for_replicas(ledger, run, started):
                continue  # stopped while waiting: the check above ends the run
            claim_chunk: Chunk | None = None
            t0 = self.clock()
            try:
                with (
                    database.chunk_session(
                        self.connection, opts.lock_timeout, opts.statement_timeout
                    ),
                    transaction.atomic(using=self.using),
                ):
                    database.set_local_timeouts(
                        self.connection, opts.lock_timeout, opts.statement_timeout
                    )
                    claim = ledger.claim(run, pacer.size, plan_inline=not self.parallel)
                    claim_chunk = claim.chunk
                    work = ChunkWork(0, 0)
                    if claim.chunk is not None:
                        with collector_paused():
                            work = self.strategy.process(claim.chunk, lock=lock)
                        seconds = self.clock() - t0
                        ledger.complete(run, claim.chunk, work, seconds)
                if (
                    claim.chunk is None
                    and not claim.requested
                    and self.parallel
                    and ledger.plan(run, pacer.size)
                ):
                    continue
            except ChunkFailed as exc:
                self._fail(ledger, run, str(exc), (scanned, changed, chunks), started)
                raise
            except DatabaseError as exc:
                reason = database.transient_reason(exc)
                attempt += 1
                if reason is None and claim_chunk is not None:
                    self._fail_on_row(
                        ledger, run, claim_chunk, exc, lock, (scanned, changed, chunks), started
                    )
                if reason is None or attempt > retries:
                    why = reason or "not a transient error"
                    message = (
                        f"{self._chunk_name(claim_chunk)} failed ({why}) after {attempt} "
                        f"attempt(s): {type(exc).__name__}: {one_line(exc)}. Earlier chunks are "
                        "committed; re-run the same command to resume."
                    )
                    self._fail(ledger, run, message, (scanned, changed, chunks), started)
                    raise ChunkFailed(message) from exc
                self._recover(ledger, reason, pacer, claim_chunk)
                delay = self._backoff(attempt)
                self.report(
                    events.Retrying(
                        reason,
                        attempt,
                        retries,
                        delay,
                        pacer.size,
                        f"{type(exc).__name__}: {str(exc).strip()}",
                    )
                )
                logger.warning(
                    "Retrying chunk in %.1f s (%s, attempt %d/%d, batch %d)",
                    delay,
                    reason,
                    attempt,
                    retries,
                    pacer.size,
                )
                self._quietly(ledger.wait, run, f"retrying after {reason} (attempt {attempt})")
                self._pause(delay, ledger, run)
                continue
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                # Code of the application's (a save() signal, a custom field) that raised
                # something other than a database error: the chunk rolled back; fail the run
                # with one line instead of leaving it running behind a traceback.
                message = (
                    f"{self._chunk_name(claim_chunk)} failed: {type(exc).__name__}: "
                    f"{one_line(exc)}. Its chunk was rolled back; earlier chunks are committed. "
                    "Re-run the same command to resume."
                )
                self._fail(ledger, run, message, (scanned, changed, chunks), started)
                raise ChunkFailed(message) from exc
            attempt = 0
            if claim.requested:
                status = Run.Status.CANCELLED if claim.requested == "cancel" else Run.Status.PAUSED
                return self._interrupt(
                    ledger,
                    run,
                    status,
                    claim.requested,
                    scanned,
                    changed,
                    chunks,
                    self.clock() - started,
                )
            if claim.chunk is None:
                break
            seconds = self.clock() - t0
            scanned += claim.chunk.keys
            changed += work.rows_changed
            chunks += 1
            pacer.record(claim.chunk.keys, seconds)
            self.report(
                events.ChunkDone(
                    claim.chunk.lo,
                    claim.chunk.hi,
                    claim.chunk.keys,
                    work.rows_changed,
                    seconds,
                    pacer.size,
                    base_scanned + scanned,
                    base_changed + changed,
                    base_chunks + chunks,
                )
            )
            self._quietly(ledger.clear_wait, run)
            self._forget_queries()
            if self.clock() - last_beat >= HEARTBEAT_EVERY:
                last_beat = self.clock()
                self._quietly(ledger.heartbeat, run)
            if next_vacuum is not None and base_scanned + scanned >= next_vacuum:
                self._vacuum(run, base_scanned + scanned)
                next_vacuum += self._vacuum_step(run) or 0
            # No pause after the chunk that reached the run's last key: nothing follows it.
            done = not self.parallel and claim.chunk.hi == end_key
            delay = 0.0 if done else pacer.delay()
            if delay > 0:
                if delay >= WAIT_SLICE and opts.max_rate and delay > (opts.sleep or 0.0):
                    reason = f"rate cap {opts.max_rate:g} rows/s"
                    self._waiting(ledger, run, events.Waiting(reason, delay, "rate cap"))
                self._pause(delay, ledger, run)
        finished = self._retried(ledger.finish, run)
        elapsed = self.clock() - started
        message = (
            f"Completed run {self.name!r}."
            if finished
            else f"No chunks left for this worker; other workers of {self.name!r} are finishing."
        )
        result = self._result(ledger, run, "completed", scanned, changed, chunks, elapsed, message)
        self.report(events.Finished(result))
        return result

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _chunk_name(chunk: Chunk | None) -> str:
        return f"Chunk after pk {chunk.lo if chunk else '?'!r}"

    def _fail_on_row(
        self,
        ledger: Ledger,
        run: Run,
        chunk: Chunk,
        error: DatabaseError,
        lock: bool,
        done: tuple[int, int, int],
        started: float,
    ) -> None:
        """Raise RowFailed naming the row the database refused, when it can be found."""
        if not self.connection.is_usable():
            self.connection.close()
        opts = self.options

        def prepare() -> None:
            database.set_local_timeouts(self.connection, opts.lock_timeout, opts.statement_timeout)

        try:
            with database.chunk_session(self.connection, opts.lock_timeout, opts.statement_timeout):
                found = failing_row(self.strategy, chunk, lock=lock, prepare=prepare)
        except (DatabaseError, BackfillError) as exc:
            logger.warning("Could not narrow the failed chunk to its row: %s", exc)
            return
        if found is None:
            return
        pk, row_error = found
        message = (
            f"{self.model._meta.label} pk={pk!r} was refused by the database: "
            f"{type(row_error).__name__}: {describe_error(row_error)}. Its chunk was rolled "
            "back. Earlier chunks are committed; fix the row or the backfill and re-run the same "
            "command to resume."
        )
        self._fail(ledger, run, message, done, started)
        raise RowFailed(message, pk=pk) from error

    def _announce(self, ledger: Ledger, run: Run, resumed: bool) -> None:
        """Report the start of the work, and what this run reads and cannot honour."""
        self.report(
            events.Started(
                self.name,
                self.model._meta.label,
                self.strategy.kind,
                database.describe(self.using),
                run.estimated_rows,
                run.rows_scanned,
                resumed,
                ledger.checkpoint(run),
            )
        )
        for note in [*self.strategy.notes(), *self._safety_notes()]:
            self.report(events.Notice(note))

    def _stop_reason(self, elapsed: float) -> str | None:
        if self.stop:
            return str(self.stop.reason)
        if self.options.max_runtime is not None and elapsed >= self.options.max_runtime:
            return f"--max-runtime {self.options.max_runtime:g}s"
        return None

    def _waiting(self, ledger: Ledger, run: Run, event: events.Waiting) -> None:
        """Say why the run holds back, and record it on the run for the admin."""
        self.report(event)
        self._quietly(ledger.wait, run, event.reason)

    def _pause(self, seconds: float, ledger: Ledger, run: Run) -> None:
        """Sleep in slices so a signal still stops the run promptly; keep the lease alive."""
        end = self.clock() + seconds
        while not self.stop:
            left = end - self.clock()
            if left <= 0:
                return
            self._sleep(min(left, WAIT_SLICE))
            if seconds > HEARTBEAT_EVERY:
                self._quietly(ledger.heartbeat, run)

    def _safety_notes(self) -> list[str]:
        """Say which PostgreSQL-only safety options this run cannot honour, and why."""
        notes = []
        vendor = self.connection.vendor
        aliases = get_setting("REPLICA_ALIASES")
        if (
            self.options.max_replica_lag
            and not aliases
            and not database.is_postgres(self.connection)
        ):
            notes.append(
                f"--max-replica-lag is not checked on {vendor}: it reads PostgreSQL's "
                "pg_stat_replication (or the replicas in BACKFILL['REPLICA_ALIASES'])."
            )
        if self.options.vacuum_every and not database.is_postgres(self.connection):
            notes.append(f"--vacuum-every is not run on {vendor}: it VACUUMs PostgreSQL tables.")
        elif self.options.vacuum_every and self.parallel:
            notes.append("--vacuum-every is not run with --workers; let autovacuum keep up.")
        return notes

    def _wait_for_replicas(self, ledger: Ledger, run: Run, started: float) -> bool:
        """Hold the run while a replica lags too much. True when it was stopped meanwhile."""
        limit = self.options.max_replica_lag
        if not limit:
            return False
        aliases = list(get_setting("REPLICA_ALIASES") or [])
        waited = False
        last_beat = self.clock()
        while True:
            if self._stop_reason(self.clock() - started):
                return True
            if self.clock() - last_beat >= HEARTBEAT_EVERY:
                # Short waits do not heartbeat by themselves; a long hold must keep the lease.
                last_beat = self.clock()
                self._quietly(ledger.heartbeat, run)
            try:
                worst = database.replica_lag(self.using, aliases)
            except DatabaseError as exc:
                for alias in {self.using, *aliases}:
                    if not connections[alias].is_usable():
                        connections[alias].close()
                waited = True
                reason = f"cannot read replica lag ({' '.join(str(exc).split())}); waiting"
                logger.warning(reason)
                self._waiting(ledger, run, events.Waiting(reason, 5.0, "replica lag unknown"))
                self._pause(5.0, ledger, run)
                continue
            if worst is None or worst[0] <= limit:
                if waited:
                    now = f"{worst[0]:.2f} s" if worst else "no replica"
                    message = f"Replica lag is back under {limit:g} s ({now}); resuming."
                    logger.info(message)
                    self.report(events.Notice(message))
                return False
            lag, where = worst
            wait = min(max(lag - limit, 1.0), 10.0)
            reason = f"{where} lags {lag:.2f} s > --max-replica-lag {limit:g} s; pausing"
            logger.info(reason)
            waited = True
            self._waiting(ledger, run, events.Waiting(reason, wait, "replica lag"))
            self._pause(wait, ledger, run)

    def _recover(self, ledger: Ledger, reason: str, pacer: Pacer, chunk: Chunk | None) -> None:
        if not self.connection.is_usable():
            self.connection.close()
        if reason in database.SHRINK_REASONS:
            pacer.shrink()
            if self.parallel and chunk is not None:
                self._quietly(ledger.split, chunk)

    def _retried(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Ledger work outside a chunk (starting, finishing, the closing summary), retried with
        backoff on the errors a chunk is retried on: a lost connection or a restarting server
        must not leave a run ``running`` with its work done.
        """
        retries = int(self.options.retries or 0)
        attempt = 0
        while True:
            try:
                return func(*args, **kwargs)
            except DatabaseError as exc:
                reason = database.transient_reason(exc)
                attempt += 1
                if reason is None or attempt > retries:
                    raise
                if not self.connection.is_usable():
                    self.connection.close()
                delay = self._backoff(attempt)
                name = getattr(func, "__name__", "bookkeeping")
                logger.warning("Retrying %s in %.1f s (%s)", name, delay, reason)
                size = self.options.batch_size or 0
                self.report(events.Retrying(reason, attempt, retries, delay, size, one_line(exc)))
                self._sleep(delay)

    @staticmethod
    def _backoff(attempt: int) -> float:
        first = float(get_setting("RETRY_BACKOFF"))
        return min(first * 2.0 ** (attempt - 1), float(get_setting("RETRY_BACKOFF_MAX")))

    def _settle(self, ledger: Ledger, run: Run, status: str, error: str = "") -> None:
        """Record how the run ended, retried; logged when the database stays away."""
        try:
            self._retried(ledger.stop, run, status, error)
        except DatabaseError as exc:
            logger.warning("Could not record run %r as %s: %s", self.name, status, exc)
            if not self.connection.is_usable():
                self.connection.close()

    def _quietly(self, func: Callable[..., Any], *args: Any) -> None:
        """Bookkeeping that may fail while the database is away; the next chunk retries."""
        try:
            func(*args)
        except DatabaseError as exc:
            logger.warning("Skipped %s: %s", getattr(func, "__name__", func), exc)
            if not self.connection.is_usable():
                self.connection.close()

    def _forget_queries(self) -> None:
        # With DEBUG=True Django keeps the last 9,000 statements, each with its parameters
        # (whole arrays here): drop them per chunk so memory stays flat.
        if settings.DEBUG and not self.connection.force_debug_cursor:
            self.connection.queries_log.clear()

    def _vacuum_step(self, run: Run) -> float | None:
        every = self.options.vacuum_every
        if not every or self.parallel or not database.is_postgres(self.connection):
            return None
        return max(1.0, (run.estimated_rows or 0) * every)

    def _vacuum(self, run: Run, done: int) -> None:
        # A multi-table-inheritance child's fields live in its parents' tables too.
        models = [
            self.model._meta.concrete_model or self.model,
            *self.model._meta.get_parent_list(),
        ]
        qn = self.connection.ops.quote_name
        table = ", ".join(dict.fromkeys(qn(m._meta.db_table) for m in models))
        t0 = self.clock()
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(f"VACUUM {table}")
        except DatabaseError as exc:
            self.report(events.Notice(f"VACUUM {table} failed: {exc}"))
            return
        self.report(
            events.Notice(f"VACUUM {table} after {done:,} rows took {self.clock() - t0:.1f} s")
        )

    def _abort(self, ledger: Ledger, run: Run, elapsed: float) -> NoReturn:
        """A second SIGINT: the chunk in flight rolled back; still an exit 3 with the hint."""
        message = (
            "Aborted by a second SIGINT; the chunk in flight was rolled back, the checkpoint "
            "is after the last committed chunk. Re-run the same command to resume run "
            f"{self.name!r}."
        )
        self._settle(ledger, run, Run.Status.STOPPED)
        try:
            fresh = self._retried(ledger.refresh, run)
            result = self._result(
                ledger,
                run,
                "stopped",
                fresh.rows_scanned - run.rows_scanned,
                fresh.rows_changed - run.rows_changed,
                fresh.chunks_done - run.chunks_done,
                elapsed,
                message,
            )
        except DatabaseError:
            result = self._bare_result("stopped", elapsed, message)
        raise Interrupted(message, result=result) from None

    def _bare_result(
        self, status: str, elapsed: float, message: str, done: tuple[int, int, int] = (0, 0, 0)
    ) -> Result:
        """A Result when the ledger cannot be read (the database is away)."""
        return Result(
            name=self.name,
            model=self.model._meta.label,
            strategy=self.strategy.kind,
            database=self.using,
            status=status,
            rows_scanned=done[0],
            rows_changed=done[1],
            chunks=done[2],
            elapsed=elapsed,
            message=message,
        )

    def _fail(
        self, ledger: Ledger, run: Run, message: str, done: tuple[int, int, int], started: float
    ) -> None:
        """Record the failure on the run and report the call's end (the caller raises)."""
        logger.error(message)
        self._settle(ledger, run, Run.Status.FAILED, message)
        elapsed = self.clock() - started
        scanned, changed, chunks = done
        try:
            result = self._result(ledger, run, "failed", scanned, changed, chunks, elapsed, message)
        except DatabaseError:
            if not self.connection.is_usable():
                self.connection.close()
            result = self._bare_result("failed", elapsed, message, done)
        self.report(events.Finished(result))

    def _interrupt(
        self,
        ledger: Ledger,
        run: Run,
        status: str,
        why: str,
        scanned: int,
        changed: int,
        chunks: int,
        elapsed: float,
    ) -> Result:
        self._settle(ledger, run, status)
        fresh = self._retried(ledger.refresh, run)
        if status == Run.Status.CANCELLED:
            by = f" by {fresh.requested_by}" if fresh.requested_by else ""
            message = (
                f"Cancelled{by}. Run {self.name!r} will not resume; pass --restart to start "
                "it over."
            )
        elif status == Run.Status.PAUSED:
            by = f" by {fresh.requested_by}" if fresh.requested_by else ""
            message = f"Paused{by}. Re-run the same command to resume run {self.name!r}."
        else:
            message = (
                f"Stopped by {why} after {chunks} chunk(s); checkpoint saved. Re-run the "
                f"same command to resume run {self.name!r}."
            )
        result = self._result(ledger, run, str(status), scanned, changed, chunks, elapsed, message)
        self.report(events.Finished(result))
        raise Interrupted(message, result=result)

    def _result(
        self,
        ledger: Ledger,
        run: Run,
        status: str,
        scanned: int,
        changed: int,
        chunks: int,
        elapsed: float,
        message: str,
    ) -> Result:
        fresh = self._retried(ledger.refresh, run)
        checkpoint = None if fresh.status == Run.Status.COMPLETED else ledger.checkpoint(fresh)
        return replace(
            self._bare_result(status, elapsed, message, (scanned, changed, chunks)),
            total_rows_scanned=fresh.rows_scanned,
            total_rows_changed=fresh.rows_changed,
            total_chunks=fresh.chunks_done,
            checkpoint=checkpoint,
        )

    # -- dry run ------------------------------------------------------------------------

    def dry_run(self, planner: KeyPlanner) -> Result:
        """The plan and a preview of the first chunk, in a transaction that is rolled back."""
        assert self.options.batch_size is not None
        size = self.options.batch_size
        with transaction.atomic(using=self.using):
            bounds = planner.key_range()
            estimate = database.table_rows(
                self.connection, self.model, exact=self.options.count == "exact"
            )
            first = planner.next_chunk(None, bounds.last, size) if bounds else None
            description = self.strategy.describe(first)
            preview = self.strategy.preview(first) if first else []
            explain, warnings = self._explain(first, estimate, size)
            transaction.set_rollback(True)
        plan = DryRunPlan(
            table=self.model._meta.db_table,
            first_key=bounds.first if bounds else None,
            last_key=bounds.last if bounds else None,
            estimated_rows=estimate,
            estimated_chunks=math.ceil(estimate / size) if estimate else 0,
            batch_size=size,
            statements=description.statements,
            preview=[{"pk": r.pk, "before": r.before, "after": r.after} for r in preview],
            explain=explain,
            warnings=warnings,
        )
        result = Result(
            name=self.name,
            model=self.model._meta.label,
            strategy=self.strategy.kind,
            database=self.using,
            status="dry run",
            message="Dry run: nothing was written.",
            plan=plan,
        )
        self.report(events.Finished(result))
        return result

    def _explain(
        self, chunk: Chunk | None, estimate: int, size: int
    ) -> tuple[list[str], list[str]]:
        """The first chunk's plan, and a warning when it reads the whole table."""
        if chunk is None or self.connection.vendor == "sqlite":
            return [], []
        from backfill.strategies import key_range

        qs = self.strategy.queryset.filter(key_range(chunk, self.model)).order_by("pk")
        sql, params = qs.query.sql_with_params()
        # The model's own tables only (MTI parents too): a join to a small table may well be
        # scanned, and a table that fits in one chunk is best read whole.
        tables = {self.model._meta.db_table} | {
            parent._meta.db_table for parent in self.model._meta.get_parent_list()
        }
        if not database.is_postgres(self.connection):
            lines, scanned = database.explain(self.connection, sql, params, tables)
            return lines, self._scan_warnings(scanned, "type ALL", estimate, size)
        with self.connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN {sql}", params)
            lines = [row[0] for row in cursor.fetchall()]
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        scanned = sorted(
            {
                node["Relation Name"]
                for node in _plan_nodes(plan[0]["Plan"])
                if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in tables
            }
        )
        return lines, self._scan_warnings(scanned, "Seq Scan", estimate, size)

    def _scan_warnings(self, scanned: list[str], how: str, estimate: int, size: int) -> list[str]:
        warnings = []
        if scanned and estimate > size:
            warnings.append(
                f"The first chunk's plan reads all of {', '.join(scanned)} ({how}): every "
                f"chunk may read the whole table, ~{math.ceil(estimate / size):,} times. Check "
                "that the primary key index is used, or ANALYZE the table."
            )
        return warnings


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)
