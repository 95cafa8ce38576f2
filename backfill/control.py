"""Run control: pause, cancel and resume a run, and tell whether a process is working it.

The admin's buttons, ``backfill_runs --pause/--cancel/--resume`` and the tests all go through
these functions. Pause and cancel only ask: they set ``Run.requested`` and every process
working the run (one process, ``--workers``, an engine's joiners) reads it before its next
chunk and stops (exit 3). A run that no live process works is cancelled at once, so a cron
job re-running it does not resume it.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.db.models import QuerySet
from django.utils import timezone

from backfill.conf import get_setting
from backfill.exceptions import BadInput
from backfill.models import Run, Worker


def lease() -> float:
    """Seconds without a heartbeat after which a worker is presumed dead."""
    return float(get_setting("LEASE_SECONDS"))


def this_process() -> tuple[str, int]:
    """How this process appears in the ledger's worker rows: (host, pid)."""
    return socket.gethostname(), os.getpid()


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process on this host (a zombie, killed but not reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def is_live(
    worker: Worker, now: datetime | None = None, *, lease_seconds: float | None = None
) -> bool:
    """Whether ``worker`` still works its run: a heartbeat within the lease, and, on this host,
    a process that exists (a holder killed with -9 is dead now, not when its lease runs out;
    other hosts' holders can only be judged by their heartbeat)."""
    now = now or timezone.now()
    horizon = now - timedelta(seconds=lease() if lease_seconds is None else lease_seconds)
    if worker.heartbeat_at < horizon:
        return False
    return not (worker.host == socket.gethostname() and not process_exists(worker.pid))


def _runs(runs: QuerySet[Run] | str, using: str) -> QuerySet[Run]:
    if isinstance(runs, str):
        found = Run.objects.using(using).filter(name=runs)
        if not found.exists():
            from backfill.status import get_run

            get_run(runs, using)  # BadInput naming the closest runs
        return found
    return runs


def pause(runs: QuerySet[Run] | str, by: str = "", *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Ask the processes working these runs (a queryset, or one run's name) to pause after
    their current chunk. Returns how many runs were asked (running ones not asked already)."""
    from backfill import ledger  # the ledger judges liveness with this module

    return ledger.ask(_runs(runs, using), Run.Request.PAUSE, by)


def cancel(runs: QuerySet[Run] | str, by: str = "", *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Cancel these runs: ask a working process to stop, mark an idle run cancelled at once.
    A cancelled run does not resume; ``--restart`` starts it over. Returns how many."""
    from backfill import ledger

    queryset = _runs(runs, using)
    now_cancelled = ledger.cancel_idle(queryset, by, lease())
    return now_cancelled + ledger.ask(queryset, Run.Request.CANCEL, by)


def live_workers(run: Run, using: str = DEFAULT_DB_ALIAS) -> list[Worker]:
    """The processes working ``run`` now (see ``is_live``)."""
    now = timezone.now()
    workers = Worker.objects.using(using).filter(run=run)
    return [w for w in workers if is_live(w, now)]


def is_worked(name: str, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether a live process works run ``name`` now."""
    run = _runs(name, using).first()
    return run is not None and bool(live_workers(run, using))


def resume(name: str, *, using: str = DEFAULT_DB_ALIAS, **options: Any) -> Any:
    """Resume a paused, stopped or stalled run whose backfill is stored as data, and return its
    Result: a run handed to a task engine is handed to it again (``options``: ``wait``,
    ``reporter``, ``stop``, as for ``backfill.engines.revive``); a run recorded by a deferred
    ``RunBackfill`` is worked here (``options`` as for ``backfill.update``). Any other run is
    resumed by re-running the command that started it: BadInput says which."""
    from backfill import deferred, engines, recipes

    run = _runs(name, using).get()
    if run.status in (Run.Status.COMPLETED, Run.Status.CANCELLED):
        raise BadInput(
            f"Run {name!r} is {run.status}: there is nothing to resume; "
            "pass --restart to the command that started it to start it over."
        )
    stored = deferred.recipe_of(name, using)
    if stored is not None and "engine" not in stored.recipe:
        return recipes.run(stored.recipe, name=name, using=using, **options)
    return engines.revive(name, using=using, **options)  # BadInput: the command that resumes it
