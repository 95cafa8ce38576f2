"""The Celery tasks of a run handed to Celery: join run R for up to its budget; revive stalls.

Imported by Celery's ``autodiscover_tasks()`` (it finds ``tasks`` modules of installed apps),
never by backfill itself, so the app works without Celery installed. The task is
``acks_late``: a worker killed mid-task leaves its message to be delivered again, and the
ledger makes a second delivery harmless.
"""

from __future__ import annotations

from celery import shared_task

from backfill import engines


# Celery ships no annotations for its decorators; the functions keep theirs.
@shared_task(name="backfill.join_run", acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def join_run(name: str, using: str = "default") -> str:
    return engines.join(name, using)


@shared_task(name="backfill.revive_stalled", ignore_result=True)  # type: ignore[untyped-decorator]
def revive_stalled(using: str = "default") -> list[str]:
    """The periodic check (a celery beat entry): hand every stalled run to its engine again."""
    return [result.name for result in engines.revive_stalled(using=using)]


def check(queue: str) -> None:
    """Any queue name will do: Celery creates a queue when a worker consumes it."""


def enqueue_joiner(name: str, using: str, queue: str) -> None:
    join_run.apply_async(args=[name, using], queue=queue)
