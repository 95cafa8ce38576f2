"""Runs handed to a task engine, as operators see them: queued, working (on which hosts), stalled.

A run handed to an engine with no live joiner is "queued" while its hand-over (or its last
heartbeat) is younger than the lease, then "stalled": its tasks were lost or its workers died.
``backfill_runs`` and the admin show it with the engine and the hosts working it;
``backfill_enqueue --stalled``, the periodic check, revives every stalled run (tests/
test_task_engine.py and tests/test_engines.py revive real ones). The rows are made here
directly, so this runs on every database.
"""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from backfill import status
from backfill.models import Run, RunRecipe, Worker
from tests.support import run


def engine_run(name: str, *, heartbeat_age: float, hosts: tuple[str, ...] = ()) -> Run:
    the_run = Run.objects.create(
        name=name,
        strategy="iterate",
        model_label="testapp.Counter",
        spec={"transform": "tests.transforms.count_hit"},
        parallel=True,
        heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age),
    )
    recipe = {
        "model": "testapp.Counter",
        "strategy": "iterate",
        "engine": {"engine": "celery", "queue": "bulk", "joiners": 2, "budget": 600.0},
    }
    RunRecipe.objects.create(name=name, recipe=recipe)
    for pid, host in enumerate(hosts, start=100):
        Worker.objects.create(run=the_run, host=host, pid=pid, heartbeat_at=timezone.now())
    return the_run


def shown(name: str) -> list[str]:
    out = StringIO()
    call_command("backfill_runs", name, stdout=out)
    return out.getvalue().splitlines()


@pytest.mark.django_db
def test_queued_then_stalled_once_no_joiner_came_within_the_lease() -> None:
    engine_run("just handed", heartbeat_age=5)
    engine_run("lost tasks", heartbeat_age=600)
    engine_run("working", heartbeat_age=1, hosts=("celery-b", "celery-a", "celery-a"))
    Run.objects.create(name="local", strategy="update", model_label="blog.BlogPost")

    states = {r.name: (r.state, r.engine, r.hosts) for r in status.list_runs()}

    assert states == {
        "just handed": ("queued", "celery", ()),
        "lost tasks": ("stalled", "celery", ()),
        "working": ("running", "celery", ("celery-a", "celery-b")),
        "local": ("abandoned", "none", ()),
    }
    assert [r.name for r in status.stalled_runs()] == ["lost tasks"]
    lines = shown("lost tasks")
    assert "  status         stalled" in lines
    assert "  engine         celery" in lines
    assert "  hosts          -" in lines
    assert any("No live joiner: the celery tasks were lost" in line for line in lines)
    assert "  resume         python manage.py backfill_enqueue 'lost tasks'" in lines
    assert not any("--filter" in line for line in lines)  # the recipe keeps the filters
    assert "  hosts          celery-a, celery-b" in shown("working")
    assert not any(line.startswith("  resume") for line in shown("just handed"))
    data = json.loads(run("backfill_runs", "--json").stdout)
    assert {r["name"]: (r["engine"], r["hosts"]) for r in data}["working"] == (
        "celery",
        ["celery-a", "celery-b"],
    )


@pytest.mark.django_db
def test_the_admin_shows_stalled_the_engine_and_the_hosts() -> None:
    stalled = engine_run("lost tasks", heartbeat_age=600)
    engine_run("working", heartbeat_age=1, hosts=("celery-a", "celery-b"))
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "x"))

    page = client.get("/admin/backfill/run/").content.decode()

    assert ">stalled<" in page
    assert '<td class="field-engine">celery</td>' in page
    assert '<td class="field-hosts">celery-a, celery-b</td>' in page
    detail = client.get(f"/admin/backfill/run/{stalled.pk}/change/").content.decode()
    assert "stalled" in detail
    assert "backfill_enqueue" in detail


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "Pass the NAME of one run, or --stalled"),
        (("some run", "--stalled"), "Pass the NAME of one run, or --stalled"),
        (("--stalled", "--wait"), "--wait follows one run"),
    ],
)
def test_backfill_enqueue_takes_a_name_or_stalled(args: tuple[str, ...], expected: str) -> None:
    outcome = run("backfill_enqueue", *args)
    assert outcome.returncode == 2
    assert expected in outcome.error


@pytest.mark.django_db
def test_with_nothing_stalled_the_periodic_check_says_so_and_changes_nothing() -> None:
    engine_run("just handed", heartbeat_age=5)
    outcome = run("backfill_enqueue", "--stalled")
    assert outcome.returncode == 0, outcome.error
    assert outcome.stdout == "No stalled runs in database 'default'.\n"
    heartbeat = Run.objects.get().heartbeat_at
    assert heartbeat is not None
    assert heartbeat < timezone.now() - timedelta(seconds=4)
