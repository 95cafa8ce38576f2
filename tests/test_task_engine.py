"""A run handed to django.tasks (``engine="tasks"``): real django-tasks-db ``db_worker`` processes.

Django 6.0+'s ``django.tasks``, or the django-tasks backport on Django 5.2, with django-tasks-db's
database backend (tests/settings.py): the tasks are rows in the test database, so the workers
need nothing but the database. Joiners claim chunks with SKIP LOCKED, so the worker tests run on
PostgreSQL and MariaDB (the 200k-row one on PostgreSQL only, once per ``make test``); SQLite
refuses ``engine=`` with exit 2 before anything is written (the first tests here, which run
everywhere). Exactly-once rests on the ledger: every Counter row ends
with ``hits == 1``, with N joiners handing over to successors and with every task enqueued twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

import backfill
from backfill import engines
from backfill.exceptions import BadInput
from backfill.models import Chunk, Run, RunRecipe
from tests.conftest import MANAGE_PY, manage_env
from tests.run_support import (
    FAST,
    SLOW,
    Workers,
    assert_every_row_once,
    assert_missing_engine_says_what_to_install,
    make_counters,
    make_many_counters,
    skip_locked_only,
    wait_for_run,
)
from tests.support import run
from tests.testapp.models import Counter

pytest.importorskip("django_tasks_db", reason="django-tasks-db is not installed (pip install it)")

from django_tasks_db.models import DBTaskResult

once_per_make_test = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the 200k-row scenario runs once per make test, on PostgreSQL (25 s on MariaDB, "
    "which runs the other db_worker tests)",
)
# Also flushes the task rows after each test: the db_worker processes read them.
committing_tasks = pytest.mark.django_db(
    transaction=True,
    available_apps=["backfill", "example_site.blog", "tests.testapp", "django_tasks_db"],
)


@pytest.fixture
def queue() -> str:
    return f"backfill-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def db_workers(
    django_db_url: str, queue: str, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start django-tasks-db ``db_worker`` processes on the test database and this test's queue."""
    workers = Workers(tmp_path, "db_worker")

    def start(row_seconds: float = 0.0) -> subprocess.Popen[bytes]:
        return workers.start(
            [
                sys.executable,
                str(MANAGE_PY),
                "db_worker",
                "--queue-name",
                queue,
                "--interval",
                "0.1",
                "--no-startup-delay",
                "--no-reload",
                "--worker-id",
                f"{queue}-{len(workers.started)}",
            ],
            manage_env(django_db_url, {"BACKFILL_TEST_ROW_SECONDS": str(row_seconds)}),
        )

    yield start
    workers.kill()


def finished_tasks(queue: str, timeout: float = 20.0) -> Any:
    """The queue's task rows once every one has finished (a task may still be ending, or a
    successor starting, when the run completes)."""
    tasks = DBTaskResult.objects.filter(queue_name=queue)
    deadline = time.monotonic() + timeout
    while tasks.exclude(status__in=("SUCCESSFUL", "FAILED")).exists():
        assert time.monotonic() < deadline, "a task never finished"
        time.sleep(0.1)
    return tasks


# -- refused before anything is written or enqueued: every database ----------------------------


@committing_tasks
def test_sqlite_or_a_backend_without_workers_is_refused_with_exit_2() -> None:
    make_counters(10)
    if connection.vendor == "sqlite":
        expected = "needs a database that claims chunks with SKIP LOCKED"
    else:
        expected = "engine='tasks' needs a task backend with workers"
    tasks = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []}}
    if connection.vendor != "sqlite":
        tasks["default"]["BACKEND"] = immediate_backend()
    with override_settings(TASKS=tasks):
        outcome = run(
            "backfill_iterate", "testapp.Counter", "--transform", FAST, "--engine", "tasks"
        )
    assert outcome.returncode == 2
    assert expected in outcome.error
    assert not Run.objects.exists()
    assert not DBTaskResult.objects.exists()


def immediate_backend() -> str:
    try:
        import django.tasks  # noqa: F401
    except ImportError:
        return "django_tasks.backends.immediate.ImmediateBackend"
    return "django.tasks.backends.immediate.ImmediateBackend"


@skip_locked_only
@committing_tasks
def test_a_queue_the_backend_does_not_list_is_refused() -> None:
    make_counters(10)
    tasks = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
    with override_settings(TASKS=tasks), pytest.raises(BadInput) as caught:
        backfill.iterate(Counter.objects.all(), transform=FAST, engine="tasks", queue="bulk")
    assert "engine='tasks' cannot enqueue on queue 'bulk'" in str(caught.value)
    assert "TASKS['default']['QUEUES']" in str(caught.value)
    assert not Run.objects.exists()
    assert not DBTaskResult.objects.exists()


WITHOUT_EXTRAS = """
import sys
for name in ("celery", "django.tasks", "django_tasks", "django_tasks_db"):
    sys.modules[name] = None  # import NAME raises ImportError, as when it is not installed
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                    "django.contrib.admin", "backfill"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
)
django.setup()
import importlib, pkgutil
import backfill, backfill.management.commands
modules = [m.name for m in pkgutil.iter_modules(backfill.__path__, "backfill.")]
modules += [m.name for m in pkgutil.iter_modules(
    backfill.management.commands.__path__, "backfill.management.commands.")]
for name in modules:
    if name not in ("backfill.tasks", "backfill.django_tasks"):
        importlib.import_module(name)
from backfill.engines import _engine_module
from backfill.exceptions import BadInput
for engine in ("celery", "tasks"):
    try:
        _engine_module(engine)
    except BadInput as exc:
        print(exc)
"""


def test_without_the_extras_the_app_imports_and_each_engine_says_what_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "engine='celery' needs Celery, which is not installed. Install it with pip install "
        "'django-backfill[celery]'.",
        "engine='tasks' needs django.tasks (Django 6.0+) or the django-tasks backport, which "
        "is not installed. Install it with pip install 'django-backfill[tasks]'.",
    ]


@committing_tasks
def test_without_django_tasks_the_tasks_engine_is_bad_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert_missing_engine_says_what_to_install(
        monkeypatch, "tasks", ["django.tasks", "django_tasks"], "django_tasks", "tasks"
    )


# -- real db_worker processes ------------------------------------------------------------------


@once_per_make_test
@committing_tasks
def test_n_joiners_add_one_to_each_of_200k_rows_exactly_once(
    queue: str, db_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    make_many_counters(200_000)
    for _ in range(2):
        db_workers()
    outcome = run(
        "backfill_iterate",
        "testapp.Counter",
        "--transform",
        FAST,
        "--engine",
        "tasks",
        "--queue",
        queue,
        "--joiners",
        "2",
        # Short enough that each joiner hands over to a successor however fast the machine.
        "--budget",
        "0.5",
        "--batch-size",
        "4000",
        "--name",
        "fleet",
    )
    assert outcome.returncode == 0, outcome.error
    assert "Handed run 'fleet' to tasks: 2 joiner(s) of up to 0.5 s each" in outcome.stdout
    assert RunRecipe.objects.get(name="fleet").recipe["engine"]["engine"] == "tasks"

    finished, most = wait_for_run("fleet")

    assert finished.status == "completed", finished.last_error
    assert not Counter.objects.exclude(hits=1).exists()
    assert Counter.objects.filter(hits=1).count() == 200_000
    assert finished.rows_changed == 200_000
    assert not Chunk.objects.filter(run=finished, status=Chunk.Status.PENDING).exists()
    assert 1 <= most <= 2
    # Joiners handed over to successors, through the backend, and all ended well.
    tasks = finished_tasks(queue)
    assert tasks.count() > 2
    assert set(tasks.values_list("status", flat=True)) == {"SUCCESSFUL"}
    assert "handed over" in set(tasks.values_list("return_value", flat=True))
    assert Chunk.objects.filter(run=finished).values("worker").distinct().count() >= 2


@skip_locked_only
@committing_tasks
def test_every_task_enqueued_twice_changes_nothing(
    queue: str, db_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    make_counters(2000)
    for _ in range(3):
        db_workers(row_seconds=0.001)
    backfill.iterate(
        Counter.objects.all(),
        transform=SLOW,
        engine="tasks",
        queue=queue,
        joiners=2,
        budget=30.0,
        batch_size=100,
        name="twice",
    )
    handover = engines.Handover(engine="tasks", queue=queue, joiners=2, budget=30.0)
    engines.enqueue(handover, "twice", "default", 2)  # every task a second time

    finished, most = wait_for_run("twice")

    assert finished.status == "completed", finished.last_error
    assert_every_row_once()
    assert most <= 2
    # A duplicate may start after the run completed: it ends at once, as every task does.
    tasks = finished_tasks(queue)
    assert tasks.count() == 4
    assert tasks.filter(status="SUCCESSFUL").count() == 4


@skip_locked_only
@committing_tasks
def test_a_transform_that_raises_fails_the_run_and_wait_exits_1(
    queue: str, db_workers: Callable[..., Any]
) -> None:
    pks = make_counters(500)
    Counter.objects.filter(pk=pks[250]).update(name="poison")
    db_workers()
    outcome = run(
        "backfill_iterate",
        "testapp.Counter",
        "--transform",
        "tests.transforms.count_hit_unless_poison",
        "--engine",
        "tasks",
        "--queue",
        queue,
        "--joiners",
        "1",
        "--batch-size",
        "100",
        "--wait",
        "--progress",
        "none",
    )
    assert outcome.returncode == 1
    assert f"row {pks[250]} is poisoned" in outcome.error
    assert Run.objects.get().status == "failed"
    assert Counter.objects.get(pk=pks[250]).hits == 0


@skip_locked_only
@committing_tasks
def test_a_stalled_run_is_revived_by_the_periodic_check_and_finished(
    queue: str, db_workers: Callable[..., Any]
) -> None:
    make_counters(1000)
    backfill.iterate(
        Counter.objects.all(), transform=FAST, engine="tasks", queue=queue, joiners=2, name="lost"
    )
    assert status_of("lost") == "queued"
    backfill.iterate(
        Counter.objects.all(), transform=FAST, engine="tasks", queue=queue, joiners=1, name="gone"
    )
    # Since then, the transform of "gone" was deleted from the code base.
    recipe = RunRecipe.objects.get(name="gone")
    recipe.recipe["transform"] = "tests.transforms.no_longer_there"
    recipe.save()
    # The tasks are lost (a backend's table wiped) and no joiner came within the lease.
    DBTaskResult.objects.filter(queue_name=queue).delete()
    Run.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=600))
    assert status_of("lost") == status_of("gone") == "stalled"

    revived = run("backfill_enqueue", "--stalled")

    # The run that can be revived is, whatever happens to the other.
    assert revived.stdout.startswith("Handed run 'lost' to tasks: 2 joiner(s)")
    assert revived.returncode == 2
    assert "Run 'gone' cannot be revived: " in revived.error
    assert "no_longer_there" in revived.error
    assert DBTaskResult.objects.filter(queue_name=queue).count() == 2
    assert status_of("gone") == "stalled"
    Run.objects.filter(name="gone").delete()
    assert status_of("lost") == "queued"
    assert run("backfill_enqueue", "--stalled").stdout == "No stalled runs in database 'default'.\n"
    db_workers()
    finished, _ = wait_for_run("lost")
    assert finished.status == "completed", finished.last_error
    assert_every_row_once()


def status_of(name: str) -> str:
    from backfill.status import get_run

    return get_run(name).state
