"""How a run is checkpointed: the run row, its chunks, and the workers holding it.

The ledger lives in the same database as the data, so a chunk's write and the advance of its
checkpoint commit together: a process killed at any instant leaves either both or neither.
Chunks are claimed with ``SELECT … FOR UPDATE SKIP LOCKED``; a claim is the row lock itself,
so a worker that dies releases its chunk with its connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from backfill.chunk_book import ChunkBook, checkpoint_of
from backfill.chunks import KeyPlanner
from backfill.conf import get_setting
from backfill.control import is_live, this_process
from backfill.database import table_rows
from backfill.exceptions import BadInput, RunBusy
from backfill.identity import RunIdentity
from backfill.models import Chunk, Run, RunRecipe, RunWait, Worker
from backfill.models import Chunk as ChunkRow
from backfill.plan_ahead import PlanAhead
from backfill.result import Tally


@dataclass(frozen=True)
class Totals:
    done: Tally
    # The last key planned (parallel runs) or worked (one process), as stored.
    frontier: str | None


def _ago(moment: Any) -> str:
    if moment is None:
        return "never"
    return f"{(timezone.now() - moment).total_seconds():.0f} s ago"


class Ledger:
    def __init__(
        self, using: str, planner: KeyPlanner, *, lease: float, ahead: PlanAhead | None = None
    ) -> None:
        self.using = using
        self.planner = planner
        self.lease = lease
        self.host, self.pid = this_process()
        self.waited = False
        # The run's chunks: claimed, planned, split and completed there.
        self.chunks = ChunkBook(using, planner, worker=f"{self.host}:{self.pid}", ahead=ahead)

    # -- starting and leaving -------------------------------------------------------------

    def start(
        self,
        identity: RunIdentity,
        *,
        restart: bool,
        parallel: bool,
        batch_size: int,
        exact_count: bool,
    ) -> tuple[Run, bool]:
        """Create or resume the run and register this process as a worker of it.

        Returns the run and whether it resumed earlier progress. A completed run is returned
        as it is (the caller reports "already completed"). Raises RunBusy when another live
        process holds the run, BadInput when the name belongs to a different backfill or to
        a cancelled run.
        """
        spec = json.loads(json.dumps(identity.spec, default=str))
        with transaction.atomic(using=self.using):
            # Two processes creating the same run race on the unique name: get_or_create takes
            # the loser's IntegrityError and returns the winner's row (locked, once committed).
            run, created = (
                Run.objects.using(self.using)
                .select_for_update()
                .get_or_create(
                    name=identity.name,
                    defaults={
                        "strategy": identity.strategy,
                        "model_label": identity.model_label,
                        "spec": spec,
                        "parallel": parallel,
                        "batch_size": batch_size,
                    },
                )
            )
            now = timezone.now()
            gone = self._refuse_holders(run, now, joining=parallel and run.parallel and not restart)
            # A pending run (recorded by a deferred RunBackfill) starts now, as a new one.
            fresh = created or restart or run.status == Run.Status.PENDING
            if not fresh:
                self._check_resumable(run, identity, spec)
                if run.status == Run.Status.COMPLETED:
                    return run, True
            resumed = not fresh and (run.chunks_done > 0 or run.frontier is not None)
            if fresh:
                self._reset(run, identity, spec, now, exact_count=exact_count)
            run.status = Run.Status.RUNNING
            run.requested = Run.Request.NONE
            run.requested_by = ""
            run.parallel = parallel
            run.batch_size = batch_size
            run.heartbeat_at = now
            run.save(using=self.using)
            workers = Worker.objects.using(self.using).filter(run=run)
            workers.filter(
                Q(heartbeat_at__lt=now - timedelta(seconds=self.lease)) | Q(pk__in=gone)
            ).delete()
            workers.update_or_create(
                run=run, host=self.host, pid=self.pid, defaults={"heartbeat_at": now}
            )
            return run, resumed

    def _refuse_holders(self, run: Run, now: Any, *, joining: bool) -> list[int]:
        """Raise RunBusy when another live process holds the run and this one may not join it;
        return the worker rows of holders that are dead now (to drop)."""
        workers = Worker.objects.using(self.using).filter(run=run)
        recent = list(workers.filter(heartbeat_at__gte=now - timedelta(seconds=self.lease)))
        gone = [w.pk for w in recent if not is_live(w, now, lease_seconds=self.lease)]
        live = [w for w in recent if w.pk not in gone and (w.host, w.pid) != (self.host, self.pid)]
        if live and not joining:
            holder = live[0]
            raise RunBusy(
                f"Run {run.name!r} is already being worked by {holder.host} pid {holder.pid} "
                f"(last heartbeat {_ago(holder.heartbeat_at)}). Wait for it or stop it "
                f"(SIGTERM); a dead process's claim expires {self.lease:.0f} s after its last "
                "heartbeat. To work it in parallel, start every process with --workers."
            )
        return gone

    @staticmethod
    def _check_resumable(run: Run, identity: RunIdentity, spec: dict[str, Any]) -> None:
        """A run resumes only as the same backfill, and never once cancelled. Compared before
        anything else, completed runs included: a name never maps two backfills to one run."""
        if (run.spec, run.model_label, run.strategy) != (
            spec,
            identity.model_label,
            identity.strategy,
        ):
            raise BadInput(
                f"Run {run.name!r} was started as a different backfill ({run.strategy} "
                f"{run.model_label} {json.dumps(run.spec, sort_keys=True)}). Pass another "
                "--name, or --restart to replace it."
            )
        if run.status == Run.Status.CANCELLED:
            by = f" by {run.requested_by}" if run.requested_by else ""
            raise BadInput(
                f"Run {run.name!r} was cancelled{by}. Pass --restart to start it over from "
                "the beginning, or --name for a new run."
            )

    def _reset(
        self, run: Run, identity: RunIdentity, spec: dict[str, Any], now: Any, *, exact_count: bool
    ) -> None:
        """Start the run from the beginning: no chunks, the table's key range as of now."""
        ChunkRow.objects.using(self.using).filter(run=run).delete()
        bounds = self.planner.key_range()
        run.spec = spec
        run.strategy = identity.strategy
        run.model_label = identity.model_label
        run.pk_end = self.planner.to_text(bounds.last) if bounds else None
        run.frontier = None
        run.planned_all = bounds is None
        run.estimated_rows = table_rows(
            self.planner.connection, self.planner.model, exact=exact_count
        )
        run.rows_scanned = run.rows_changed = run.chunks_done = 0
        run.work_seconds = 0.0
        run.started_at = now
        run.finished_at = None
        run.last_error = ""

    def leave(self, run: Run) -> None:
        Worker.objects.using(self.using).filter(run=run, host=self.host, pid=self.pid).delete()
        self.clear_wait(run)

    def forget_worker(self, run: Run, pid: int) -> None:
        """Drop the worker row of a process of this host that is known to be gone."""
        Worker.objects.using(self.using).filter(run=run, host=self.host, pid=pid).delete()

    def totals(self, run: Run) -> Totals | None:
        """The run's counters as committed so far (by every process working it)."""
        row = (
            Run.objects.using(self.using)
            .filter(pk=run.pk)
            .values_list("rows_scanned", "rows_changed", "chunks_done", "frontier")
            .first()
        )
        if row is None:
            return None
        scanned, changed, chunks, frontier = row
        return Totals(Tally(scanned, changed, chunks), frontier)

    def heartbeat(self, run: Run) -> None:
        now = timezone.now()
        Worker.objects.using(self.using).filter(run=run, host=self.host, pid=self.pid).update(
            heartbeat_at=now
        )
        Run.objects.using(self.using).filter(pk=run.pk).update(heartbeat_at=now)

    # -- ending -----------------------------------------------------------------------------

    def finish(self, run: Run) -> bool:
        """Mark the run completed when every chunk is planned and done."""
        with transaction.atomic(using=self.using):
            runs = Run.objects.using(self.using).filter(pk=run.pk)
            state = runs.select_for_update().values("planned_all").get()
            pending = ChunkRow.objects.using(self.using).filter(
                run=run, status=ChunkRow.Status.PENDING
            )
            if not state["planned_all"] or pending.exists():
                return False
            runs.update(status=Run.Status.COMPLETED, finished_at=timezone.now(), last_error="")
            return True

    def wait(self, run: Run, reason: str) -> None:
        """Record why the run holds back (replica lag, a rate cap, a retry's backoff).

        ``since`` stays at the start of this spell of waiting, whatever its reasons since.
        ``clear_wait`` removes it once this process goes on.
        """
        RunWait.objects.using(self.using).update_or_create(
            name=run.name,
            defaults={"reason": reason},
            create_defaults={"reason": reason, "since": timezone.now()},
        )
        self.waited = True

    def clear_wait(self, run: Run) -> None:
        """The wait this process recorded is over (a chunk committed, or it leaves the run)."""
        if self.waited:
            RunWait.objects.using(self.using).filter(name=run.name).delete()
            self.waited = False

    def stop(self, run: Run, status: str, error: str = "") -> None:
        """Record how this process's work on ``run`` ended.

        Stopped (a signal, ``--max-runtime``) ends this process's share only: while another
        live process still works the run (``--workers`` on other hosts, an engine's other
        joiners) it stays running, and a run another process completed or failed meanwhile
        keeps that. Decided under the run's row lock, this process's worker row removed in the
        same transaction, so of processes stopping together the last one records the stop.
        """
        now = timezone.now()
        fields: dict[str, Any] = {"status": status, "heartbeat_at": now}
        if error:
            fields["last_error"] = error
        runs = Run.objects.using(self.using).filter(pk=run.pk)
        if status != Run.Status.STOPPED:
            runs.update(**fields)
            return
        with transaction.atomic(using=self.using):
            current = runs.select_for_update().values_list("status", flat=True).first()
            self.forget_worker(run, self.pid)  # this process's row: it works the run no more
            if current == Run.Status.RUNNING and not other_live_workers(
                run, self.using, now, self.lease
            ):
                runs.update(**fields)

    def refresh(self, run: Run) -> Run:
        return Run.objects.using(self.using).get(pk=run.pk)

    def checkpoint(self, run: Run) -> Any:
        """The key below which every chunk is done: the lowest pending chunk, or the frontier
        of ``run`` as the caller last read it.
        """
        lowest = (
            ChunkRow.objects.using(self.using)
            .filter(run=run, status=ChunkRow.Status.PENDING)
            .order_by("id")
            .values("lo")
            .first()
        )
        text = checkpoint_of(
            run.frontier,
            pending=lowest is not None,
            lowest_pending=lowest["lo"] if lowest is not None else None,
        )
        return self.planner.from_text(text)


# -- joiners: the ledger's side of a run handed to a task engine (backfill.engines) -------------


def awaiting_engine(name: str, using: str) -> None:
    """A run just started for an engine waits for its joiners: running, not stopped."""
    Run.objects.using(using).filter(name=name, status=Run.Status.STOPPED).update(
        status=Run.Status.RUNNING, heartbeat_at=timezone.now()
    )


def enter_joiner(run: Run, joiners: int, using: str) -> bool:
    """Register this process as a worker of ``run`` unless ``joiners`` already work it.

    Counted under the run's row lock, so two tasks delivered at once cannot both pass.
    """
    host, pid = this_process()
    lease = float(get_setting("LEASE_SECONDS"))
    with transaction.atomic(using=using):
        Run.objects.using(using).select_for_update().filter(pk=run.pk).get()
        now = timezone.now()
        if len(other_live_workers(run, using, now, lease)) >= joiners:
            return False
        Worker.objects.using(using).update_or_create(
            run=run, host=host, pid=pid, defaults={"heartbeat_at": now}
        )
        return True


def other_live_workers(run: Run, using: str, now: Any, lease: float) -> list[Worker]:
    """The processes other than this one working ``run`` now (``control.is_live``)."""
    here = this_process()
    recent = Worker.objects.using(using).filter(
        run=run, heartbeat_at__gte=now - timedelta(seconds=lease)
    )
    return [
        worker
        for worker in recent
        if (worker.host, worker.pid) != here and is_live(worker, now, lease_seconds=lease)
    ]


def after_budget(run: Run, using: str) -> bool:
    """After a joiner's budget ended: whether work remains, for a successor.

    The Runner recorded the run as stopped, or left it running for the other joiners still
    working it: settle it to completed when every chunk is planned and done, else running.
    """
    with transaction.atomic(using=using):
        runs = Run.objects.using(using).select_for_update().filter(pk=run.pk)
        state = runs.values("status", "planned_all").get()
        worked = (Run.Status.STOPPED, Run.Status.RUNNING, Run.Status.COMPLETED)
        if state["status"] not in worked:
            return False  # paused, cancelled or failed meanwhile
        pending = Chunk.objects.using(using).filter(run=run, status=Chunk.Status.PENDING)
        if state["planned_all"] and not pending.exists():
            runs.update(status=Run.Status.COMPLETED, finished_at=timezone.now(), last_error="")
            return False
        runs.update(status=Run.Status.RUNNING)
        return True


def leave_joiner(run: Run, using: str) -> None:
    host, pid = this_process()
    Worker.objects.using(using).filter(run=run, host=host, pid=pid).delete()


def fail(run: Run, using: str, error: str) -> None:
    """Record a run no process can work any more (its recipe no longer fits the model)."""
    Run.objects.using(using).filter(pk=run.pk).update(status=Run.Status.FAILED, last_error=error)


# -- outside a run: what the operations, run control and the engines record -------------------


def record_pending(
    name: str, recipe: Mapping[str, Any], *, using: str, estimated_rows: int | None = None
) -> tuple[Run, bool]:
    """Record run ``name`` as pending with its recipe; an existing run is kept as it is.

    Returns the run and whether it was created. A run that already exists (a migrate run again
    after a later operation failed) keeps its status and progress.
    """
    with transaction.atomic(using=using):
        run, created = Run.objects.using(using).get_or_create(
            name=name,
            defaults={
                "status": Run.Status.PENDING,
                "strategy": recipe["strategy"],
                "model_label": recipe["model"],
                "estimated_rows": estimated_rows,
            },
        )
        kept = RunRecipe.objects.using(using)
        if created:
            # A recipe left by a deleted run of the same name describes nothing any more.
            kept.update_or_create(name=name, defaults={"recipe": dict(recipe), "deferred": True})
        else:
            kept.get_or_create(name=name, defaults={"recipe": dict(recipe), "deferred": True})
    return run, created


def keep_recipe(name: str, recipe: Mapping[str, Any], *, using: str) -> None:
    """Keep the recipe of a run worked inline, so it can be verified like a deferred one."""
    if Run.objects.using(using).filter(name=name).exists():
        RunRecipe.objects.using(using).get_or_create(name=name, defaults={"recipe": dict(recipe)})


def store_recipe(name: str, recipe: Mapping[str, Any], using: str) -> None:
    """Keep (or replace) the recipe of a run handed to an engine: its joiners rebuild it."""
    RunRecipe.objects.using(using).update_or_create(name=name, defaults={"recipe": dict(recipe)})


def forget_run(name: str, using: str) -> None:
    """Drop run ``name`` (a migration's run in the other direction, which no longer holds)."""
    Run.objects.using(using).filter(name=name).delete()


def ask(runs: QuerySet[Run], request: str, by: str) -> int:
    """Ask the processes working these running runs, not asked yet, to pause or cancel."""
    asked = runs.filter(status=Run.Status.RUNNING)
    if request == Run.Request.PAUSE:
        asked = asked.filter(requested="")
    else:
        asked = asked.exclude(requested=Run.Request.CANCEL)
    return asked.update(requested=request, requested_by=by)


def cancel_idle(runs: QuerySet[Run], by: str, lease: float) -> int:
    """Cancel at once the unfinished runs no live process works (nothing would read a request);
    ``requested`` is set too: a process starting one at this very moment stops as cancelled."""
    live = Worker.objects.filter(
        run=OuterRef("pk"), heartbeat_at__gte=timezone.now() - timedelta(seconds=lease)
    )
    idle = runs.exclude(status__in=[Run.Status.COMPLETED, Run.Status.CANCELLED]).filter(
        Q(status__in=IDLE) | Q(status=Run.Status.RUNNING) & ~Exists(live)
    )
    return idle.update(status=Run.Status.CANCELLED, requested=Run.Request.CANCEL, requested_by=by)


# Runs no process is working: cancelling them takes effect at once.
IDLE = [Run.Status.PENDING, Run.Status.PAUSED, Run.Status.STOPPED, Run.Status.FAILED]
