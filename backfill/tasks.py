"""The Celery task of a run handed to Celery: join run R for up to its budget.

Imported by Celery's ``autodiscover_tasks()`` (it finds ``tasks`` modules of installed apps),
never by backfill itself, so the app works without Celery installed. The task is
``acks_late``: a worker killed mid-task leaves its message to be delivered again, and the
ledger makes a second delivery harmless.
"""

from __future__ import annotations

from celery import shared_task

from backfill import engines


@shared_task(name="backfill.join_run", acks_late=True, ignore_result=True)
def join_run(name: str, using: str = "default") -> str:
    return engines.join(name, using)
