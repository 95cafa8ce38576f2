"""A run handed to a task engine (Celery, django.tasks): joiners on the team's workers work it.

``backfill.update/iterate/cursor(..., engine="celery")`` (``--engine celery`` on the commands;
``engine="tasks"`` for ``django.tasks``)
checks everything a local run checks, creates the run through the ledger, stores the backfill
as data (``backfill.recipes``) and enqueues N "join run R for up to B seconds" tasks when the
transaction commits. It returns at once; ``wait=True`` (``--wait``) follows the run from the
ledger and ends like a local run.

A joiner (``join``) rebuilds the backfill from its recipe against the current model and works
it as one of the run's parallel workers: it claims chunks with ``SELECT … FOR UPDATE SKIP
LOCKED`` like ``--workers``, until its budget ends or no chunk is left, then enqueues its
successor while work remains. The run's row lock guards the count, so at most N joiners work it
at once, however many tasks the engine delivers. No engine is exactly-once (a task may run twice,
or never, or die with its worker); the ledger is: a chunk's write and its checkpoint commit
together, and a chunk is claimed by its row lock. A run whose joiners all vanished (a lost task,
a broker wiped) shows as stalled and is revived by handing it over again: the same call or
command resumes it, and ``revive_stalled`` (``backfill_enqueue --stalled``) revives them all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Q, QuerySet

from backfill import events, ledger, recipes
from backfill.conf import Options, get_setting
from backfill.database import check_alias
from backfill.deferred import pending_runs, recipe_of
from backfill.exceptions import BadInput, ChunkFailed, Interrupted, RunBusy
from backfill.models import Run
from backfill.result import Result, Tally
from backfill.stopping import StopFlag
from backfill.validation import NAME_LENGTH, check_options, free_connections

logger = logging.getLogger("backfill")

# Each engine: the module of its joiner task, its default queue, and what to install for it.
ENGINES = ("celery", "tasks")
ENGINE_MODULES = {"celery": "backfill.tasks", "tasks": "backfill.django_tasks"}
DEFAULT_QUEUES = {"celery": "celery", "tasks": "default"}
NEEDS = {
    "celery": ("Celery", "celery"),
    "tasks": ("django.tasks (Django 6.0+) or the django-tasks backport", "tasks"),
}
# Run options a joiner must not inherit: each joiner is one parallel worker working its budget.
NOT_STORED = ("name", "restart", "dry_run", "max_runtime", "workers", "join", "extra")
MAX_JOINERS = 1000
# A day: longer than a broker's redelivery timeout is never wanted.
MAX_BUDGET = 86_400.0
POLL_EVERY = 1.0


@dataclass(frozen=True)
class Handover:
    """How a run is handed to an engine: kept in its recipe, so every joiner knows it."""

    engine: str
    queue: str
    joiners: int
    budget: float

    @classmethod
    def chosen(
        cls, engine: str | None, queue: str | None, joiners: int | None, budget: float | None
    ) -> Handover:
        """From the arguments, else the settings. Raises BadInput for a value out of range."""
        engine = engine or str(get_setting("ENGINE"))
        handover = cls(
            engine=engine,
            queue=queue or str(get_setting("ENGINE_QUEUE") or DEFAULT_QUEUES.get(engine, "")),
            joiners=joiners if joiners is not None else int(get_setting("ENGINE_JOINERS")),
            budget=budget if budget is not None else float(get_setting("ENGINE_BUDGET_SECONDS")),
        )
        if handover.engine not in ENGINES:
            raise BadInput(
                f"engine={handover.engine!r} is not a task engine backfill knows. "
                f"Pass one of: {', '.join(ENGINES)}."
            )
        if isinstance(handover.joiners, bool) or not isinstance(handover.joiners, int):
            raise BadInput(f"joiners must be a whole number, got {handover.joiners!r}.")
        if not 1 <= handover.joiners <= MAX_JOINERS:
            raise BadInput(
                f"joiners must be from 1 to {MAX_JOINERS}, got {handover.joiners!r}: each "
                "joiner holds one database connection while it works."
            )
        seconds = handover.budget
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not 0 < seconds <= MAX_BUDGET
        ):
            raise BadInput(
                f"budget must be a number of seconds above 0 and at most {MAX_BUDGET:g}, got "
                f"{seconds!r}: a joiner hands over to its successor after it, e.g. budget=600."
            )
        _engine_module(handover.engine).check(handover.queue)
        return handover

    def as_data(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "queue": self.queue,
            "joiners": self.joiners,
            "budget": self.budget,
        }


def _engine_module(engine: str) -> Any:
    """The module holding the engine's joiner task; BadInput when the engine is not installed."""
    import importlib

    try:
        return importlib.import_module(ENGINE_MODULES[engine])
    except ImportError:
        what, extra = NEEDS[engine]
        raise BadInput(
            f"engine={engine!r} needs {what}, which is not installed. Install it with "
            f"pip install 'django-backfill[{extra}]'."
        ) from None
    except Exception as exc:  # e.g. TASKS naming no backend, or no queue the task can use
        raise BadInput(f"engine={engine!r} cannot be used: {exc}") from None


def watch_command(name: str, using: str = DEFAULT_DB_ALIAS) -> str:
    args = ["python", "manage.py", "backfill_runs", name]
    if using != DEFAULT_DB_ALIAS:
        args += ["--database", using]
    return shlex.join(args)


# -- handing a run over -----------------------------------------------------------------------


def hand_off(
    queryset: QuerySet[Any],
    strategy: str,
    *,
    engine: str | None,
    set: Mapping[str, Any] | None = None,
    transform: Any = None,
    fields: Sequence[str] | None = None,
    save: bool = False,
    filter: Mapping[str, Any] | Q | None = None,
    exclude: Mapping[str, Any] | Q | None = None,
    queue: str | None = None,
    joiners: int | None = None,
    budget: float | None = None,
    wait: bool = False,
    reporter: events.Reporter | None = None,
    stop: StopFlag | None = None,
    **options: Any,
) -> Result:
    """Create the run, then enqueue its joiners on the engine when the transaction commits.

    Called by ``backfill.update/iterate/cursor`` when they get ``engine=``. The rows are
    ``queryset`` (unfiltered) narrowed by ``filter``/``exclude`` lookups: what a worker on
    another machine can rebuild. Returns a Result with status ``queued``; with ``wait`` the
    Result of the finished run. Raises BadInput before anything is written or enqueued (a
    filtered queryset, a lambda transform, a value JSON cannot hold), RunBusy when a
    single-process run holds the run; with ``wait``, ChunkFailed and Interrupted as a local
    run does.
    """
    using = queryset.db
    handover = Handover.chosen(engine, queue, joiners, budget)
    _check_describable(queryset, options)
    check_options(Options(**options))
    run_options = {k: v for k, v in options.items() if k not in NOT_STORED}
    if save:
        run_options["save"] = True
    parts = {"set": set, "transform": transform, "filter": filter, "exclude": exclude}
    recipe = _recipe(
        queryset, strategy, _loaded_fields(queryset, strategy, fields), parts, run_options
    )
    _check_database(using, handover.joiners)
    recipe["engine"] = handover.as_data()
    name = options.get("name") or default_name(recipe)
    return _hand_over(
        recipe,
        name,
        using,
        restart=bool(options.get("restart")),
        wait=wait,
        reporter=reporter,
        stop=stop,
    )


def _recipe(
    queryset: QuerySet[Any],
    strategy: str,
    fields: Sequence[str] | None,
    parts: Mapping[str, Any],
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The backfill as data (``set``, ``transform``, ``filter``, ``exclude`` in ``parts``),
    checked against the model; BadInput when a part cannot be stored."""
    try:
        recipe = recipes.build(
            model_label=queryset.model._meta.label,
            strategy=strategy,
            fields=fields,
            needs=None,
            options=options,
            **parts,
        )
    except ValueError as exc:
        detail = str(exc).replace("a deferred run", "a run handed to an engine")
        raise BadInput(detail.replace("or defer=False", "or run it without engine=")) from None
    recipes.validate(recipe, queryset.model, queryset.db)
    return recipe


def revive(
    name: str,
    *,
    using: str = DEFAULT_DB_ALIAS,
    wait: bool = False,
    reporter: events.Reporter | None = None,
    stop: StopFlag | None = None,
) -> Result:
    """Hand run ``name`` to its engine again, as its recipe says: resume it, enqueue N joiners.

    For a run whose joiners all vanished (a lost task, a flushed broker) or that was paused;
    joiners still at work are kept, and the guard keeps the run at N. Raises BadInput when the
    run was not handed to an engine; with ``wait`` what ``follow`` raises.
    """
    check_alias(using)
    stored = recipe_of(name, using)
    if stored is None or "engine" not in stored.recipe:
        from backfill.status import get_run

        get_run(name, using)  # BadInput with the closest names when there is no such run
        raise BadInput(
            f"Run {name!r} was not handed to a task engine; resume it with the command that "
            f"started it, shown by: {watch_command(name, using)}"
        )
    recipe = dict(stored.recipe)
    recipes.validate(recipe, recipes.model_of(recipe), using)
    return _hand_over(recipe, name, using, restart=False, wait=wait, reporter=reporter, stop=stop)


def revive_stalled(
    *, using: str = DEFAULT_DB_ALIAS, on_result: Callable[[Result], None] | None = None
) -> list[Result]:
    """Hand every stalled run (joiners all vanished) to its engine again: the periodic check.

    Safe to run as often as wanted: a run is stalled only when no joiner has sent a heartbeat
    for the lease (``LEASE_SECONDS``) and none was handed over within it; surplus joiners end
    at once (``enough joiners``). Returns one ``queued`` Result per run revived, each also
    passed to ``on_result`` as it is. A run that cannot be revived (its recipe no longer fits
    the model) does not keep the others from it: BadInput names it after the others are done.
    """
    from backfill.status import stalled_runs

    revived, failed = [], []
    for run in stalled_runs(using):
        try:
            result = revive(run.name, using=using)
        except BadInput as exc:
            logger.error("Stalled run %r cannot be revived: %s", run.name, exc)
            failed.append(f"Run {run.name!r} cannot be revived: {exc}")
            continue
        revived.append(result)
        if on_result is not None:
            on_result(result)
    if failed:
        raise BadInput(" ".join(failed))
    return revived


def hand_pending(
    names: Sequence[str] = (),
    *,
    using: str = DEFAULT_DB_ALIAS,
    engine: str | None = None,
    queue: str | None = None,
    joiners: int | None = None,
    budget: float | None = None,
) -> list[Result]:
    """Hand every pending deferred run (or those in ``names``) to the task engine, oldest
    first: the engine's side of ``backfill_pending``. Each run is validated against the
    current model, started through the ledger and given N joiners on commit; returns one
    ``queued`` Result per run. Raises BadInput before anything is enqueued.
    """
    handover = Handover.chosen(engine, queue, joiners, budget)
    _check_database(using, handover.joiners)
    runs = pending_runs(using, names)
    handed = []
    for run in runs:
        stored = recipe_of(run.name, using)
        assert stored is not None
        recipe = {**stored.recipe, "engine": handover.as_data()}
        recipes.validate(recipe, recipes.model_of(recipe), using)
        handed.append(
            _hand_over(recipe, run.name, using, restart=False, wait=False, reporter=None, stop=None)
        )
    return handed


def _hand_over(
    recipe: dict[str, Any],
    name: str,
    using: str,
    *,
    restart: bool,
    wait: bool,
    reporter: events.Reporter | None,
    stop: StopFlag | None,
) -> Result:
    handover = Handover(**recipe["engine"])
    result = _start(recipe, name, using, restart=restart)
    if result is not None:
        return result  # already completed: nothing to enqueue
    with transaction.atomic(using=using):
        ledger.store_recipe(name, recipe, using)
        transaction.on_commit(lambda: enqueue(handover, name, using, handover.joiners), using=using)
    message = (
        f"Handed run {name!r} to {handover.engine}: {handover.joiners} joiner(s) of up to "
        f"{handover.budget:g} s each on queue {handover.queue!r}. Watch it with: "
        f"{watch_command(name, using)}"
    )
    logger.info(message)
    queued = Result(
        name=name,
        model=recipe["model"],
        strategy=recipe["strategy"],
        database=using,
        status="queued",
        message=message,
    )
    if not wait:
        return queued
    report = reporter or events.ignore
    report(events.Notice(message))
    return follow(name, using=using, reporter=report, stop=stop)


def _check_database(using: str, joiners: int) -> None:
    """Joiners claim chunks with SKIP LOCKED, each on its own connection."""
    check_alias(using)
    connection = connections[using]
    if not connection.features.has_select_for_update_skip_locked:
        raise BadInput(
            f"engine= needs a database that claims chunks with SKIP LOCKED (PostgreSQL); "
            f"database {using!r} is {connection.vendor}. Run the backfill without engine=."
        )
    free = free_connections(connection)
    if free is not None and joiners > free:
        raise BadInput(
            f"joiners={joiners} need {joiners} more connections but database {using!r} allows "
            f"{max(free, 0)} more. Pass joiners={max(free, 1)} or fewer."
        )


def _check_describable(queryset: QuerySet[Any], options: Mapping[str, Any]) -> None:
    if queryset.query.where:
        raise BadInput(
            "engine= hands the run to other processes, which cannot rebuild a filtered "
            "queryset. Pass the model's unfiltered queryset (e.g. BlogPost.objects.all()) and "
            "the lookups as filter={'author__isnull': True} (or a Q object)."
        )
    if options.get("dry_run"):
        raise BadInput("A dry run is local: call it without engine= to see the plan.")
    if options.get("max_runtime") is not None:
        raise BadInput(
            "max_runtime bounds one process; with engine= pass budget= (the seconds each "
            "joiner works before it hands over to its successor)."
        )
    if options.get("workers", 1) != 1:
        raise BadInput(
            "workers= forks processes on this machine; with engine= pass joiners= (how many "
            "tasks work the run at once)."
        )


def _loaded_fields(
    queryset: QuerySet[Any], strategy: str, fields: Sequence[str] | None
) -> Sequence[str] | None:
    """The columns ``iterate`` loads, from the queryset's ``only()``; ``defer()`` is refused."""
    names, deferred = queryset.query.deferred_loading
    if strategy != "iterate" or not names:
        return fields
    if deferred:
        raise BadInput(
            "engine= cannot hand over a queryset with defer(): list the columns to load "
            "with only() instead."
        )
    return sorted(names)


def default_name(recipe: Mapping[str, Any]) -> str:
    """A stable run name from what the recipe does (the engine settings left out)."""
    what = {k: v for k, v in recipe.items() if k != "engine"}
    digest = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
    doing = recipe.get("transform") or "set " + ",".join(recipe.get("set", {}))
    head = f"{recipe['strategy']} {recipe['model']} {doing}"
    if len(head) > NAME_LENGTH - len(digest) - 1:
        head = head[: NAME_LENGTH - len(digest) - 2] + "…"
    return f"{head} {digest}"


def _start(recipe: Mapping[str, Any], name: str, using: str, *, restart: bool) -> Result | None:
    """Create (or resume) the run through the ledger, as a parallel run nobody works yet.

    The run is started by a Runner that is stopped before its first chunk: every check a local
    run makes is made, with the same run name, spec and key range its joiners will find.
    Returns the Result when the run is already completed, else None.
    """
    stopped = StopFlag()
    stopped.set("handing the run to a task engine")
    try:
        result = recipes.run(
            recipe, name=name, using=using, stop=stopped, join=True, restart=restart
        )
    except Interrupted:
        # Until a joiner starts, the run waits for the engine: running, not stopped.
        ledger.awaiting_engine(name, using)
        return None
    return result


def enqueue(handover: Handover, name: str, using: str, count: int) -> None:
    """Put ``count`` joiner tasks of run ``name`` on the engine's queue."""
    module = _engine_module(handover.engine)
    for _ in range(count):
        module.enqueue_joiner(name, using, handover.queue)
    logger.info("Enqueued %d joiner(s) of run %r on %r", count, name, handover.queue)


# -- a joiner ---------------------------------------------------------------------------------


def join(name: str, using: str = DEFAULT_DB_ALIAS) -> str:
    """Work run ``name`` as one of its joiners for up to its budget; the engine's task body.

    Returns what happened, for the engine's log: ``completed``, ``handed over`` (a successor
    was enqueued), ``enough joiners``, or the run's status when it needs no more work. Never
    raises for the run's own failures: they are recorded on the run, where its watchers look.
    """
    stored = recipe_of(name, using)
    if stored is None or "engine" not in stored.recipe:
        logger.error("Run %r has no engine recipe; nothing to join.", name)
        return "no recipe"
    handover = Handover(**stored.recipe["engine"])
    run = Run.objects.using(using).filter(name=name).first()
    if run is None or run.status not in (Run.Status.RUNNING, Run.Status.STOPPED):
        return run.status if run is not None else "no run"
    if not ledger.enter_joiner(run, handover.joiners, using):
        return "enough joiners"
    try:
        recipes.run(stored.recipe, name=name, using=using, join=True, max_runtime=handover.budget)
        return "completed"
    except Interrupted:
        if ledger.after_budget(run, using):
            enqueue(handover, name, using, 1)
            return "handed over"
        return str(Run.objects.using(using).get(pk=run.pk).status)
    except (ChunkFailed, RunBusy) as exc:
        logger.error("Joiner of run %r: %s", name, exc)
        return "failed" if isinstance(exc, ChunkFailed) else "busy"
    except BadInput as exc:
        # The recipe no longer fits the model (a field renamed since): no joiner can work it.
        ledger.fail(run, using, str(exc))
        logger.error("Joiner of run %r: %s", name, exc)
        return "failed"
    finally:
        ledger.leave_joiner(run, using)


# -- following a run --------------------------------------------------------------------------


def follow(
    name: str,
    *,
    using: str = DEFAULT_DB_ALIAS,
    reporter: events.Reporter = events.ignore,
    stop: StopFlag | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Result:
    """Follow run ``name`` from the ledger until it ends; end as a local run would.

    Reports progress (``ChunkDone``) as the joiners commit chunks. Returns the Result when the
    run completed; raises ChunkFailed when it failed (its message names the row or chunk),
    Interrupted when it was paused or cancelled, or when ``stop`` is set (the run goes on).
    """
    flag = stop if stop is not None else StopFlag()
    started = clock()
    first = Run.objects.using(using).get(name=name)
    base = Tally(first.rows_scanned, first.rows_changed, first.chunks_done)
    run = _until_ended(name, using, base, reporter, flag, sleep)
    scanned, changed = run.rows_scanned - base.scanned, run.rows_changed - base.changed
    done = Tally(scanned, changed, run.chunks_done - base.chunks)

    def result(state: str, message: str) -> Result:
        elapsed = clock() - started
        return Result.of_run(
            run, database=using, status=state, done=done, elapsed=elapsed, message=message
        )

    status = run.status
    if status == Run.Status.COMPLETED:
        completed = result("completed", f"Completed run {name!r}.")
        reporter(events.Finished(completed))
        return completed
    if status == Run.Status.FAILED:
        failed = result("failed", run.last_error or f"Run {name!r} failed.")
        reporter(events.Finished(failed))
        raise ChunkFailed(failed.message, result=failed)
    if status in (Run.Status.PAUSED, Run.Status.CANCELLED):
        by = f" by {run.requested_by}" if run.requested_by else ""
        message = f"Run {name!r} was {status}{by}."
    else:
        message = (
            f"Stopped following run {name!r} ({flag.reason}); its joiners go on. Watch it "
            f"with: {watch_command(name, using)}"
        )
    interrupted = result(str(status), message)
    reporter(events.Finished(interrupted))
    raise Interrupted(message, result=interrupted)


ENDED = (Run.Status.COMPLETED, Run.Status.FAILED, Run.Status.PAUSED, Run.Status.CANCELLED)


def _until_ended(
    name: str,
    using: str,
    base: Tally,
    reporter: events.Reporter,
    flag: StopFlag,
    sleep: Callable[[float], None],
) -> Run:
    """Poll run ``name`` every POLL_EVERY seconds, reporting what its joiners committed,
    until it ends or ``flag`` is set; the run as last read."""
    seen = base
    while True:
        run = Run.objects.using(using).get(name=name)
        if run.chunks_done != seen.chunks:
            reporter(
                events.ChunkDone(
                    None,
                    run.frontier,
                    run.rows_scanned - seen.scanned,
                    run.rows_changed - seen.changed,
                    POLL_EVERY,
                    run.batch_size,
                    run.rows_scanned,
                    run.rows_changed,
                    run.chunks_done,
                )
            )
            seen = Tally(run.rows_scanned, run.rows_changed, run.chunks_done)
        if run.status in ENDED or flag:
            return run
        sleep(POLL_EVERY)
