"""The ``django.tasks`` task of a run handed to ``engine="tasks"``: join run R for its budget.

Django 6.0's ``django.tasks`` when present, else the ``django-tasks`` backport (Django 5.2).
Imported by ``backfill.engines`` only when a run is handed to this engine, and by the task
backend's worker (django-tasks-db's ``db_worker``, ...) from the task's path
``backfill.django_tasks.join_run``, so the app works without either installed.

No backend is exactly-once (django-tasks-db leaves the task of a killed worker RUNNING for
ever); the ledger is, so a task run twice, or never, changes nothing: ``backfill_enqueue``
revives a run whose joiners vanished.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from backfill import engines
from backfill.conf import get_setting
from backfill.exceptions import BadInput

try:
    from django.tasks import DEFAULT_TASK_QUEUE_NAME, task, task_backends
    from django.tasks.exceptions import TaskException
except ImportError:  # Django 5.2: the backport
    from django_tasks import (  # type: ignore[no-redef,attr-defined,assignment,unused-ignore]
        DEFAULT_TASK_QUEUE_NAME,
        task,
        task_backends,
    )
    from django_tasks.exceptions import (  # type: ignore[no-redef,assignment,unused-ignore]
        TaskException,
    )

# Backends that never hand a task to another process: the run would be worked inline by the
# process handing it over (immediate), or never (dummy).
NOT_WORKERS = ("ImmediateBackend", "DummyBackend")


def _declared_queue() -> str:
    # The backend validates the declared queue when this module is imported: it must be one
    # of its QUEUES, so the configured queue is declared when there is one.
    return str(get_setting("ENGINE_QUEUE") or DEFAULT_TASK_QUEUE_NAME)


@task(queue_name=_declared_queue())
def join_run(name: str, using: str = "default") -> str:
    return engines.join(name, using)


def check(queue: str) -> None:
    """Raise BadInput unless the default task backend runs tasks in workers on ``queue``."""
    try:
        backend = task_backends["default"]
        kind = type(backend).__name__
        if kind in NOT_WORKERS:
            raise BadInput(
                f"engine='tasks' needs a task backend with workers, but TASKS['default'] is "
                f"{kind}, which never hands a task to another process. Set TASKS['default']"
                "['BACKEND'] to e.g. 'django_tasks_db.DatabaseBackend' and run its db_worker."
            )
        join_run.using(queue_name=queue)
    except (TaskException, ImproperlyConfigured) as exc:
        raise BadInput(
            f"engine='tasks' cannot enqueue on queue {queue!r}: {exc} Pass a queue listed in "
            "TASKS['default']['QUEUES'] (queue=, --queue, BACKFILL['ENGINE_QUEUE'])."
        ) from None


def enqueue_joiner(name: str, using: str, queue: str) -> None:
    join_run.using(queue_name=queue).enqueue(name, using)
