"""The entry of a run: check the call, start (or resume) the run in the ledger, hand it to the
work that runs it (the chunk loop, or the parent of ``--workers``), and leave the run.

The pieces, each in its own module: the run's identity (``identity``), the ledger
(``ledger``), how chunks are claimed (``claims``), one chunk's transaction
(``chunk_transaction``), the loop that sequences chunks (``loop``), the gates that hold a run
(``gates``), retries (``retry``), how a call ends (``endings``) and the dry run (``dryrun``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import DatabaseError, connections

from backfill import dryrun, events, plan_ahead
from backfill.chunks import KeyPlanner
from backfill.claims import Shared, Solo
from backfill.conf import Options, get_setting
from backfill.context import StartedRun, Work
from backfill.endings import Endings
from backfill.exceptions import InsideTransaction
from backfill.identity import identify
from backfill.ledger import Ledger
from backfill.loop import ChunkLoop
from backfill.models import Run
from backfill.plan_ahead import PlanAhead
from backfill.result import Result, Tally
from backfill.retry import Retrier
from backfill.stopping import StopFlag, stop_on_signals
from backfill.strategies import Strategy
from backfill.validation import check_filter, check_name, check_options, check_workers

logger = logging.getLogger("backfill")


class Runner:
    """Runs one strategy over its queryset as a resumable run.

    ``run()`` returns a Result when the run completed (or was already completed). It raises
    BadInput before writing anything, Interrupted when stopped early (signal, max runtime,
    pause, cancel), ChunkFailed/TransformFailed when a chunk kept failing, RunBusy when another
    process holds the run. ``work`` is what runs the started run: the chunk loop by default,
    the parent of ``--workers`` for a parallel run.
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
        work: Work = ChunkLoop.work,
    ) -> None:
        self.strategy = strategy
        self.options = options.resolved()
        self.report = reporter
        self.clock = clock
        self.sleep = sleep
        self.stop = stop if stop is not None else StopFlag()
        self.using = strategy.queryset.db
        self.connection = connections[self.using]
        self.model = strategy.queryset.model
        shared = parallel or self.options.workers > 1 or self.options.join
        self.claims = Shared() if shared else Solo()
        self.work = work
        self.identity = identify(strategy, self.options.name)
        self.name = self.identity.name

    def run(self) -> Result:
        # A server that cannot be reached at all is a setup problem, reported at once; one lost
        # later (a restart) is waited for (see Retrier).
        self.connection.ensure_connection()
        self._check()
        planner = KeyPlanner(self.model, self.connection)
        if self.options.dry_run:
            return self._dry_run(planner)
        ahead = self._plan_ahead(planner)
        ledger = Ledger(self.using, planner, lease=float(get_setting("LEASE_SECONDS")), ahead=ahead)
        assert self.options.batch_size is not None
        retried = Retrier(
            self.connection,
            retries=int(self.options.retries or 0),
            batch_size=self.options.batch_size,
            report=self.report,
            sleep=self.sleep,
        )
        run, resumed = retried(
            ledger.start,
            self.identity,
            restart=self.options.restart,
            parallel=self.claims.shared,
            batch_size=self.options.batch_size,
            exact_count=self.options.count == "exact",
        )
        endings = Endings(
            self.identity,
            self.using,
            ledger,
            run,
            retried=retried,
            report=self.report,
            clock=self.clock,
        )
        try:
            if run.status == Run.Status.COMPLETED:
                message = (
                    f"Run {self.name!r} already completed; nothing to do. "
                    "Pass --restart to run it again from the beginning."
                )
                return endings.finished("already completed", Tally(), 0.0, message)
            started = self._started(ledger, run, resumed, retried, endings)
            began = self.clock()
            with stop_on_signals(self.stop):
                try:
                    return self.work(started)
                except KeyboardInterrupt:
                    endings.abort(self.clock() - began)
        finally:
            if ahead is not None:
                ahead.close()
            try:
                retried(ledger.leave, run)
            except DatabaseError:
                logger.warning(
                    "Could not deregister worker of run %r; its lease will expire.", self.name
                )

    def _check(self) -> None:
        """Everything that makes the call bad input, before anything is written."""
        check_options(self.options)
        check_name(self.name, given=self.identity.named)
        check_workers(self.options.workers, self.connection, count_connections=False)
        if self.connection.in_atomic_block:
            raise InsideTransaction(
                "A backfill commits chunk by chunk and cannot run inside a transaction "
                "(atomic block). In a migration set `atomic = False` on the Migration class; "
                "elsewhere call it outside transaction.atomic()."
            )
        check_filter(self.strategy.queryset)

    def _plan_ahead(self, planner: KeyPlanner) -> PlanAhead | None:
        """Alone on the run, on a server: plan each next chunk on a second connection."""
        if self.claims.shared or not get_setting("PLAN_AHEAD"):
            return None
        if not plan_ahead.available(self.connection):
            return None
        return PlanAhead(
            planner,
            lock_timeout=self.options.lock_timeout,
            statement_timeout=self.options.statement_timeout,
        )

    def _started(
        self, ledger: Ledger, run: Run, resumed: bool, retried: Retrier, endings: Endings
    ) -> StartedRun:
        return StartedRun(
            strategy=self.strategy,
            options=self.options,
            identity=self.identity,
            connection=self.connection,
            ledger=ledger,
            run=run,
            resumed=resumed,
            claims=self.claims,
            retried=retried,
            endings=endings,
            report=self.report,
            clock=self.clock,
            sleep=self.sleep,
            stop=self.stop,
        )

    def _dry_run(self, planner: KeyPlanner) -> Result:
        assert self.options.batch_size is not None
        plan = dryrun.plan(
            self.strategy, planner, self.options.batch_size, exact=self.options.count == "exact"
        )
        result = Result(
            name=self.name,
            model=self.identity.model_label,
            strategy=self.strategy.kind,
            database=self.using,
            status="dry run",
            message="Dry run: nothing was written.",
            plan=plan,
        )
        self.report(events.Finished(result))
        return result
