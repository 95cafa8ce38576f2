"""Where runs stand, read-only: what ``backfill_runs`` prints and the admin shows.

Everything here reads the ledger (``Run``, ``Chunk``, ``Worker``) and never writes it, so an
operator can look as often as they like while a run works. A listing costs two queries whatever
the number of runs: the runs with their pending-chunk count and lowest pending chunk, then their
workers.
"""

from __future__ import annotations

import difflib
import json
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.utils import timezone

from backfill import control, schema
from backfill.chunk_book import checkpoint_of
from backfill.control import is_live
from backfill.database import check_alias
from backfill.exceptions import BadInput
from backfill.models import Chunk, Run, RunRecipe, Worker

# Shown instead of "running" when no worker of the run has sent a heartbeat within the lease:
# the process died (kill -9, a crash, a lost host) and nothing is working the run.
ABANDONED = "abandoned"
# A run handed to a task engine (backfill.engines) with no live joiner is "queued" while its
# hand-over or last heartbeat is younger than the lease (the engine has yet to start a joiner),
# then "stalled": its joiners vanished (tasks lost, workers killed, a broker wiped), and
# ``backfill_enqueue NAME`` (or ``--stalled``, the periodic check) revives it.
QUEUED = "queued"
STALLED = "stalled"
# Parts of a resume command that the stored spec cannot give back.
UNKNOWN_EXPRESSIONS = "<the original --set-expr options>"
WORKERS = "--workers <N>"


@dataclass(frozen=True)
class WorkerStatus:
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float
    live: bool


@dataclass(frozen=True)
class RunStatus:
    """One run as an operator sees it. ``state`` is the stored ``status``, except ``abandoned``."""

    name: str
    model: str
    strategy: str
    database: str
    spec: dict[str, Any]
    status: str
    state: str
    requested: str
    requested_by: str
    progress: float | None
    estimated_rows: int | None
    rows_scanned: int
    rows_changed: int
    chunks_done: int
    chunks_pending: int
    rate: float | None
    work_seconds: float
    batch_size: int
    parallel: bool
    checkpoint: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    heartbeat_age: float | None
    finished_at: datetime | None
    last_error: str
    workers: tuple[WorkerStatus, ...]
    resume_command: str | None
    # The task engine the run was handed to ("celery", "tasks"), or "none"; the hosts of its
    # live workers.
    engine: str = "none"
    hosts: tuple[str, ...] = ()

    @property
    def live_workers(self) -> tuple[WorkerStatus, ...]:
        return tuple(w for w in self.workers if w.live)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: datetimes as ISO 8601, progress as a 0..1 share, rate in rows/s."""
        data = asdict(self)
        data["workers"] = [_jsonable(asdict(w)) for w in self.workers]
        return _jsonable(data)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, float):
            value = round(value, 1 if key == "rate" else 4)
        out[key] = value
    return out


def annotated(queryset: QuerySet[Run]) -> QuerySet[Run]:
    """Runs with ``pending_chunks``, ``lowest_pending`` (a chunk's ``lo``), ``deferred_run``
    (recorded by a deferred RunBackfill) and their workers.
    """
    pending = Chunk.objects.filter(run=OuterRef("pk"), status=Chunk.Status.PENDING)
    return queryset.annotate(
        pending_chunks=Count("chunks", filter=Q(chunks__status=Chunk.Status.PENDING)),
        lowest_pending=Subquery(pending.order_by("id").values("lo")[:1]),
        deferred_run=Exists(RunRecipe.objects.filter(name=OuterRef("name"), deferred=True)),
        engine_run=Exists(
            RunRecipe.objects.filter(name=OuterRef("name"), recipe__has_key="engine")
        ),
        engine_name=Subquery(
            RunRecipe.objects.filter(name=OuterRef("name"))
            .annotate(engine_name=KT("recipe__engine__engine"))
            .values("engine_name")[:1]
        ),
    ).prefetch_related(Prefetch("workers", queryset=Worker.objects.order_by("host", "pid")))


def checkpoint(run: Run) -> str | None:
    """The key below which every chunk is done (as ``Ledger.checkpoint``), as stored text.

    The lowest pending chunk's lower bound when chunks wait (parallel runs, a killed worker),
    else the frontier. None = the start of the table. Needs a run from ``annotated()``.
    """
    return checkpoint_of(
        run.frontier,
        pending=bool(getattr(run, "pending_chunks", 0)),
        lowest_pending=getattr(run, "lowest_pending", None),
    )


def state(run: Run, workers: Iterable[WorkerStatus], now: datetime | None = None) -> str:
    if run.status == Run.Status.RUNNING and not any(w.live for w in workers):
        if getattr(run, "engine_run", False):
            horizon = (now or timezone.now()) - timedelta(seconds=control.lease())
            recent = run.heartbeat_at is not None and run.heartbeat_at >= horizon
            return QUEUED if recent else STALLED
        return ABANDONED
    return str(run.status)


def resume_command(run: Run, using: str = DEFAULT_DB_ALIAS) -> str | None:
    """The command line that resumes ``run``, rebuilt from its stored spec; None when finished.

    The spec holds what identifies the backfill (the values set, the transform, the columns),
    not the filters, nor the values of ``backfill_iterate --set``; where those cannot be
    rebuilt the line says so in angle brackets.
    """
    if run.status == Run.Status.COMPLETED:
        return None
    if getattr(run, "engine_run", False):
        # Handed to a task engine (backfill.engines): handing it over again resumes it.
        revive = ["python", "manage.py", "backfill_enqueue", run.name]
        if using != DEFAULT_DB_ALIAS:
            revive += ["--database", using]
        return shlex.join(revive)
    if getattr(run, "deferred_run", False):
        from backfill.deferred import pending_command

        return pending_command(run.name, using, restart=run.status == Run.Status.CANCELLED)
    spec = run.spec or {}
    args: list[str] = ["python", "manage.py", f"backfill_{run.strategy}", run.model_label]
    values = spec.get("set")
    if values is not None:
        expressions = set(spec.get("expressions") or ())
        for field, value in sorted(values.items()):
            if field in expressions:
                continue
            if isinstance(value, str):
                args += ["--set", f"{field}={value}"]
            else:
                args += ["--set-json", f"{field}={json.dumps(value)}"]
        if expressions:
            args.append(UNKNOWN_EXPRESSIONS)
    elif spec.get("transform"):
        args += ["--transform", spec["transform"]]
    if spec.get("save"):
        args.append("--save")
    if run.strategy == "cursor" and spec.get("fields"):
        args += ["--only", ",".join(spec["fields"])]
    args += ["--name", run.name]
    if using != DEFAULT_DB_ALIAS:
        args += ["--database", using]
    if run.status == Run.Status.CANCELLED:
        args.append("--restart")
    if run.parallel:
        args.append(WORKERS)
    return " ".join(a if a in (UNKNOWN_EXPRESSIONS, WORKERS) else shlex.quote(a) for a in args)


def describe(run: Run, using: str = DEFAULT_DB_ALIAS, now: datetime | None = None) -> RunStatus:
    """A run (from ``annotated()``, or a plain one at the cost of two more queries) as seen now."""
    now = now or timezone.now()
    if not hasattr(run, "pending_chunks"):
        run = annotated(Run.objects.using(using).filter(pk=run.pk)).get()
    workers = tuple(
        WorkerStatus(
            host=w.host,
            pid=w.pid,
            started_at=w.started_at,
            heartbeat_at=w.heartbeat_at,
            heartbeat_age=max(0.0, (now - w.heartbeat_at).total_seconds()),
            live=is_live(w, now),
        )
        for w in run.workers.all()
    )
    pending = int(getattr(run, "pending_chunks", 0))
    return RunStatus(
        name=run.name,
        model=run.model_label,
        strategy=run.strategy,
        database=using,
        spec=dict(run.spec or {}),
        status=str(run.status),
        state=state(run, workers, now),
        requested=run.requested,
        requested_by=run.requested_by,
        progress=run.progress,
        estimated_rows=run.estimated_rows,
        rows_scanned=run.rows_scanned,
        rows_changed=run.rows_changed,
        chunks_done=run.chunks_done,
        chunks_pending=pending,
        rate=run.rate,
        work_seconds=run.work_seconds,
        batch_size=run.batch_size,
        parallel=run.parallel,
        checkpoint=None if run.status == Run.Status.COMPLETED else checkpoint(run),
        created_at=run.created_at,
        started_at=run.started_at,
        heartbeat_at=run.heartbeat_at,
        heartbeat_age=(
            max(0.0, (now - run.heartbeat_at).total_seconds()) if run.heartbeat_at else None
        ),
        finished_at=run.finished_at,
        last_error=run.last_error,
        workers=workers,
        resume_command=resume_command(run, using),
        engine=getattr(run, "engine_name", None) or "none",
        hosts=tuple(sorted({w.host for w in workers if w.live})),
    )


def list_runs(using: str = DEFAULT_DB_ALIAS, now: datetime | None = None) -> list[RunStatus]:
    """Every run in database ``using``, newest first. Raises BadInput for an unknown alias."""
    check_alias(using)
    now = now or timezone.now()
    runs = annotated(Run.objects.using(using).order_by("-created_at", "-id"))
    return [describe(run, using, now) for run in runs]


def stalled_runs(using: str = DEFAULT_DB_ALIAS) -> list[RunStatus]:
    """The runs handed to a task engine whose joiners all vanished, oldest first."""
    check_alias(using)
    now = timezone.now()
    runs = annotated(
        Run.objects.using(using).filter(status=Run.Status.RUNNING).order_by("created_at", "id")
    )
    return [info for info in (describe(run, using, now) for run in runs) if info.state == STALLED]


def get_run(name: str, using: str = DEFAULT_DB_ALIAS, now: datetime | None = None) -> RunStatus:
    """The run called ``name``. Raises BadInput, with the closest names, when there is none."""
    check_alias(using)
    run = annotated(Run.objects.using(using).filter(name=name)).first()
    if run is None:
        names = list(Run.objects.using(using).values_list("name", flat=True))
        raise BadInput(
            f"No backfill run named {name!r} in database {using!r}.{_suggest(name, names)} "
            "List the runs with: python manage.py backfill_runs"
        )
    return describe(run, using, now)


def _suggest(name: str, names: list[str]) -> str:
    # Run names are long ("iterate blog.BlogPost normalize_author 1a2b3c4d"): besides
    # difflib's close matches, offer the names that contain what was typed.
    folded = name.casefold()
    close = [n for n in names if folded and folded in n.casefold()]
    close += [n for n in difflib.get_close_matches(name, names, n=3, cutoff=0.6) if n not in close]
    return schema.did_you_mean(close[:3])


def ago(seconds: float | None) -> str:
    """``"4 s ago"``, ``"3 min ago"``, ``"2 h ago"``, ``"5 d ago"``; ``"never"`` for None."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def percent(progress: float | None) -> str:
    return "?" if progress is None else f"{progress * 100:.1f}%"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} rows/s"
