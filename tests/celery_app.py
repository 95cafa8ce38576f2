"""The Celery app of the engine tests' workers (``celery -A tests.celery_app worker``).

Configured from the environment: the worker runs with the test database's DATABASE_URL and
``BACKFILL_TEST_BROKER`` (Redis by default), like a team's own Celery app would be.
"""

from __future__ import annotations

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

app = Celery(
    "backfill_tests", broker=os.environ.get("BACKFILL_TEST_BROKER", "redis://127.0.0.1:6379/15")
)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks(["backfill"])
app.set_default()
