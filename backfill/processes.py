"""How ``--workers`` starts its processes: the start method, and what a child needs to begin.

``BACKFILL["WORKER_START_METHOD"]`` picks multiprocessing's start method; the default is
``forkserver``, Python 3.14's default on Linux. A forked child would inherit the parent's
threads' locks, which is why Python 3.12+ warns when a multi-threaded process forks; a child
of the fork server (or a spawned one) starts clean instead, and so must set up Django itself.
It gets a ``Handover``: the settings module, the parent's database settings (which may have
been changed after start-up, as a test runner does for its test database) and the work,
pickled. ``fork`` keeps the old behaviour: the child shares the parent's memory, nothing is
pickled, and a lambda transform or a migration's historical model still works.

Importing this module does not need the app registry, so a fresh interpreter can unpickle its
entry point before Django is set up.
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

from backfill.conf import get_setting
from backfill.exceptions import BadInput

if TYPE_CHECKING:
    from backfill.conf import Options
    from backfill.strategies import Strategy

START_METHODS = ("forkserver", "spawn", "fork")


def start_method() -> str:
    """The configured start method; BadInput when it is not one this platform has."""
    method = get_setting("WORKER_START_METHOD")
    available = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
    if method not in available:
        raise BadInput(
            f"BACKFILL['WORKER_START_METHOD'] is {method!r}, which is not a start method here. "
            f"Set it to one of {', '.join(repr(m) for m in available)}."
        )
    return str(method)


def context(method: str) -> BaseContext:
    """The multiprocessing context of ``method``, its fork server already running (so that it
    does not inherit the signal mask the parent holds while starting workers).
    """
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        # Children fork from a server with Django already set up (backfill.forkserver).
        context.set_forkserver_preload(["__main__", "backfill.forkserver"])
        multiprocessing.forkserver.ensure_running()
    return context


def _queryset(cls: type[Any], state: dict[str, Any]) -> Any:
    queryset = object.__new__(cls)
    queryset.__dict__.update(state)
    return queryset


class _Pickler(pickle.Pickler):
    """Pickles a QuerySet as its query, never its rows: QuerySet's own pickling evaluates it,
    which for a backfill means reading the whole table (Django documents pickling ``.query``
    to recreate a queryset without results).
    """

    def reducer_override(self, obj: Any) -> Any:
        from django.db.models import QuerySet

        if isinstance(obj, QuerySet):
            state = {**obj.__dict__, "_result_cache": None, "_prefetch_done": False}
            return _queryset, (type(obj), state)
        return NotImplemented


def dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


@dataclass(frozen=True)
class Handover:
    """What a child started by ``forkserver`` or ``spawn`` gets: enough to set up Django as the
    parent did, and the work, pickled so that it is read only once Django is ready.
    """

    method: str
    settings_module: str
    databases: dict[str, dict[str, Any]]
    work: bytes

    def open(self) -> tuple[Strategy, Options]:
        import django
        from django.apps import apps

        os.environ["DJANGO_SETTINGS_MODULE"] = self.settings_module
        if not apps.ready:
            django.setup()
        from django.db import connections

        for alias, settings_dict in self.databases.items():
            connections[alias].settings_dict.update(settings_dict)
        strategy, options = pickle.loads(self.work)
        return strategy, options


def hand_over(strategy: Strategy, options: Options, method: str) -> Handover:
    """The Handover for a child of ``method``; BadInput when the work cannot travel to it."""
    from django.conf import settings
    from django.db import connections

    try:
        work = dumps((strategy, options))
    except Exception as exc:
        raise BadInput(
            f"This backfill cannot be sent to worker processes started with {method!r}: "
            f"{type(exc).__name__}: {exc}. Pass a transform defined at module level (not a "
            "lambda or a nested function) and a model that can be imported, or set "
            "BACKFILL['WORKER_START_METHOD'] = 'fork'."
        ) from None
    if not settings.SETTINGS_MODULE:
        raise BadInput(
            f"Worker processes started with {method!r} set up Django from a settings module, "
            "and these settings were configured in code (settings.configure()). Use "
            "DJANGO_SETTINGS_MODULE, or set BACKFILL['WORKER_START_METHOD'] = 'fork'."
        )
    databases = {alias: dict(connections[alias].settings_dict) for alias in connections}
    return Handover(method, settings.SETTINGS_MODULE, databases, work)


def start_worker(
    work: Handover | tuple[Strategy, Options], pipe: Connection, parent_pid: int
) -> None:
    """A worker process's entry point: set Django up when the child starts clean, then work."""
    # Blocked until the worker's own handlers exist; a forked child has them blocked already.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    # A child of the fork server watches the fork server, which exits when the parent does.
    served = isinstance(work, Handover) and work.method == "forkserver"
    watched = os.getppid() if served else parent_pid
    strategy, options = work.open() if isinstance(work, Handover) else work
    from backfill.workers import _work_in_child

    _work_in_child(strategy, options, pipe, parent_pid, watched)
