"""backfill_runs: the table of runs, one run in detail, --json, and unknown names."""

from __future__ import annotations

import itertools
import json
import shlex
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backfill import status
from backfill.models import Chunk, Run, Worker
from tests.testapp.models import Counter, Tagged

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _utc_and_long_lease(settings: Any) -> None:
    settings.TIME_ZONE = "UTC"
    # Ages in minutes keep the output exact however slow the test machine is.
    settings.BACKFILL = {"LEASE_SECONDS": 600}


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


def make_run(name: str, *, created: int, **fields: Any) -> Run:
    defaults: dict[str, Any] = {
        "strategy": "update",
        "model_label": "blog.BlogPost",
        "spec": {"set": {"author": "anon"}},
        "started_at": STARTED,
        "batch_size": 500,
    }
    run = Run.objects.create(name=name, **{**defaults, **fields})
    Run.objects.filter(pk=run.pk).update(created_at=STARTED + timedelta(minutes=created))
    return run


@pytest.fixture
def runs() -> dict[str, Run]:
    done = make_run(
        "fill authors",
        created=1,
        status=Run.Status.COMPLETED,
        estimated_rows=1000,
        rows_scanned=1000,
        rows_changed=250,
        chunks_done=2,
        work_seconds=0.5,
        frontier="1000",
        heartbeat_at=ago(hours=3),
        finished_at=STARTED + timedelta(seconds=1),
    )
    paused = make_run(
        "tidy titles",
        created=2,
        strategy="iterate",
        spec={"transform": "tests.test_runs_command.tidy", "save": False},
        status=Run.Status.PAUSED,
        requested=Run.Request.PAUSE,
        requested_by="alice",
        estimated_rows=4000,
        rows_scanned=1000,
        rows_changed=10,
        chunks_done=2,
        work_seconds=2.0,
        frontier="1000",
        heartbeat_at=ago(minutes=10),
    )
    running = make_run(
        "count hits",
        created=3,
        model_label="testapp.Counter",
        strategy="cursor",
        spec={"transform": "bump", "fields": ["hits"]},
        heartbeat_at=ago(minutes=2),
    )
    Worker.objects.create(run=running, host="db-worker-1", pid=4242, heartbeat_at=ago(minutes=2))
    dead = make_run(
        "dead run",
        created=4,
        parallel=True,
        estimated_rows=1000,
        rows_scanned=200,
        rows_changed=200,
        chunks_done=1,
        work_seconds=0.1,
        frontier="600",
        last_error="Chunk after pk '200' failed (lock timeout) after 6 attempt(s).",
        heartbeat_at=ago(hours=3),
    )
    Chunk.objects.create(run=dead, lo=None, hi="200", status=Chunk.Status.DONE, rows_scanned=200)
    Chunk.objects.create(run=dead, lo="200", hi="400", rows_scanned=200)
    Chunk.objects.create(run=dead, lo="400", hi="600", rows_scanned=200)
    Worker.objects.create(run=dead, host="db-worker-2", pid=7, heartbeat_at=ago(hours=3))
    Worker.objects.update(started_at=STARTED)
    return {"done": done, "paused": paused, "running": running, "dead": dead}


def runs_command(*args: str) -> str:
    out = StringIO()
    call_command("backfill_runs", *args, stdout=out)
    return out.getvalue()


# -- the table --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_runs_says_so() -> None:
    assert runs_command() == "No backfill runs in database 'default'.\n"


@pytest.mark.django_db
def test_table_lists_every_run_newest_first(runs: dict[str, Run]) -> None:
    assert runs_command().splitlines() == [
        "NAME          MODEL            STATUS     PROGRESS  SCANNED  CHANGED          RATE  "
        "STARTED              HEARTBEAT   CHECKPOINT",
        "dead run      blog.BlogPost    abandoned     20.0%      200      200  2,000 rows/s  "
        "2026-01-02 03:04:05  3 h ago     200",
        "count hits    testapp.Counter  running           ?        0        0             -  "
        "2026-01-02 03:04:05  2 min ago   start",
        "tidy titles   blog.BlogPost    paused        25.0%    1,000       10    500 rows/s  "
        "2026-01-02 03:04:05  10 min ago  1000",
        "fill authors  blog.BlogPost    completed    100.0%    1,000      250  2,000 rows/s  "
        "2026-01-02 03:04:05  3 h ago     done",
    ]


@pytest.mark.django_db
def test_listing_costs_two_queries_whatever_the_number_of_runs(runs: dict[str, Run]) -> None:
    with CaptureQueriesContext(connection) as four:
        runs_command()
    for i in range(6):
        run = make_run(f"more {i}", created=10 + i)
        Worker.objects.create(run=run, host="h", pid=i, heartbeat_at=ago(minutes=1))
    with CaptureQueriesContext(connection) as ten:
        runs_command()
    assert len(four) == len(ten) == 2


@pytest.mark.django_db
def test_json_is_a_list_of_every_field(runs: dict[str, Run]) -> None:
    data = json.loads(runs_command("--json"))

    assert [r["name"] for r in data] == ["dead run", "count hits", "tidy titles", "fill authors"]
    dead = data[0]
    assert dead["status"] == "running"
    assert dead["state"] == "abandoned"
    assert dead["progress"] == 0.2
    assert dead["rate"] == 2000.0
    assert dead["checkpoint"] == "200"
    assert (dead["chunks_done"], dead["chunks_pending"]) == (1, 2)
    assert dead["started_at"] == "2026-01-02T03:04:05+00:00"
    assert [(w["host"], w["pid"], w["live"]) for w in dead["workers"]] == [
        ("db-worker-2", 7, False)
    ]
    assert dead["resume_command"] == (
        "python manage.py backfill_update blog.BlogPost --set author=anon "
        "--name 'dead run' --workers <N>"
    )
    paused = data[2]
    assert (paused["requested"], paused["requested_by"]) == ("pause", "alice")
    assert data[1]["progress"] is None and data[1]["rate"] is None
    assert data[3]["checkpoint"] is None and data[3]["resume_command"] is None


@pytest.mark.django_db
def test_json_with_no_runs_is_an_empty_list() -> None:
    assert json.loads(runs_command("--json", "--database", "default")) == []


# -- one run ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_run_in_detail(runs: dict[str, Run]) -> None:
    heartbeat = timezone.localtime(runs["dead"].heartbeat_at).strftime("%Y-%m-%d %H:%M:%S")

    assert runs_command("dead run").splitlines() == [
        "Run 'dead run' on database 'default'",
        "  model          blog.BlogPost",
        "  strategy       update",
        "  engine         none",
        '  spec           {"set": {"author": "anon"}}',
        "  status         abandoned",
        "  progress       20.0% (200 of ~1,000 rows)",
        "  rows scanned   200",
        "  rows changed   200",
        "  chunks         1 done, 2 pending",
        "  rate           2,000 rows/s over 0.10 s of work",
        "  batch size     500",
        "  checkpoint     200",
        "  created        2026-01-02 03:08:05",
        "  started        2026-01-02 03:04:05",
        f"  heartbeat      {heartbeat} (3 h ago)",
        "  finished       -",
        "  workers        0 live:",
        "    db-worker-2 pid 7, started 2026-01-02 03:04:05, heartbeat 3 h ago  (no heartbeat "
        "within the lease: presumed dead)",
        "  hosts          -",
        "  last error     Chunk after pk '200' failed (lock timeout) after 6 attempt(s).",
        "  No live worker: the process that ran it died. Re-run it to resume.",
        "  resume         python manage.py backfill_update blog.BlogPost --set author=anon "
        "--name 'dead run' --workers <N>",
        "                 (add the original --filter/--exclude options, if any)",
    ]


@pytest.mark.django_db
def test_one_run_as_json(runs: dict[str, Run]) -> None:
    data = json.loads(runs_command("tidy titles", "--json"))

    assert data["name"] == "tidy titles"
    assert (data["status"], data["state"], data["requested_by"]) == ("paused", "paused", "alice")
    assert (data["rows_scanned"], data["estimated_rows"], data["progress"]) == (1000, 4000, 0.25)
    assert data["checkpoint"] == "1000"
    assert data["workers"] == []
    assert data["resume_command"] == (
        "python manage.py backfill_iterate blog.BlogPost "
        "--transform tests.test_runs_command.tidy --name 'tidy titles'"
    )


@pytest.mark.django_db
def test_live_workers_are_listed_with_their_heartbeat(runs: dict[str, Run]) -> None:
    lines = runs_command("count hits").splitlines()

    assert "  status         running" in lines
    assert "  checkpoint     start" in lines
    assert "  workers        1 live:" in lines
    assert "    db-worker-1 pid 4242, started 2026-01-02 03:04:05, heartbeat 2 min ago" in lines
    assert "  hosts          db-worker-1" in lines
    # A run a live process works needs no resume line.
    assert not any(line.startswith("  resume") for line in lines)


@pytest.mark.django_db
def test_unknown_name_exits_2_with_close_names(runs: dict[str, Run]) -> None:
    with pytest.raises(CommandError) as caught:
        runs_command("tidy title")

    assert caught.value.returncode == 2
    assert str(caught.value) == (
        "No backfill run named 'tidy title' in database 'default'. Did you mean 'tidy titles'? "
        "List the runs with: python manage.py backfill_runs"
    )


@pytest.mark.django_db
def test_unknown_name_suggests_names_containing_it(runs: dict[str, Run]) -> None:
    with pytest.raises(CommandError) as caught:
        runs_command("RUN")

    assert caught.value.returncode == 2
    assert "Did you mean 'dead run'?" in str(caught.value)


@pytest.mark.django_db
def test_unknown_name_without_runs_says_how_to_list() -> None:
    with pytest.raises(CommandError) as caught:
        runs_command("anything", "--json")

    assert caught.value.returncode == 2
    assert str(caught.value) == (
        "No backfill run named 'anything' in database 'default'. "
        "List the runs with: python manage.py backfill_runs"
    )


@pytest.mark.django_db
def test_unknown_database_alias_exits_2() -> None:
    with pytest.raises(CommandError) as caught:
        runs_command("--database", "replica")

    assert caught.value.returncode == 2
    assert str(caught.value) == (
        "Unknown database alias 'replica': not in settings.DATABASES. Use one of: default."
    )


# -- the resume command ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"strategy": "update", "spec": {"set": {"name": "a b", "views": 5, "flag": None}}},
            "python manage.py backfill_update testapp.SparseItem --set-json flag=null "
            "--set 'name=a b' --set-json views=5 --name nightly",
        ),
        (
            {"strategy": "update", "spec": {"set": {"data": {"k": [1, None]}}}},
            "python manage.py backfill_update testapp.SparseItem "
            "--set-json 'data={\"k\": [1, null]}' --name nightly",
        ),
        (
            {
                "strategy": "update",
                "spec": {
                    "set": {"views": "F(views) + Value(1)", "name": "x"},
                    "expressions": ["views"],
                },
            },
            "python manage.py backfill_update testapp.SparseItem --set name=x "
            "<the original --set-expr options> --name nightly",
        ),
        (
            {
                "strategy": "iterate",
                "spec": {"transform": "set name", "save": True, "set": {"name": "a b"}},
            },
            "python manage.py backfill_iterate testapp.SparseItem --set 'name=a b' --save "
            "--name nightly",
        ),
        (
            {
                "strategy": "cursor",
                "spec": {"transform": "set views", "fields": ["views"], "set": {"views": 5}},
            },
            "python manage.py backfill_cursor testapp.SparseItem --set-json views=5 --only views "
            "--name nightly",
        ),
        (
            {"strategy": "cursor", "spec": {"transform": "fix_row", "fields": ["name", "views"]}},
            "python manage.py backfill_cursor testapp.SparseItem --transform fix_row "
            "--only name,views --name nightly",
        ),
        (
            {"strategy": "cursor", "spec": {"transform": "fix_row"}, "status": "cancelled"},
            "python manage.py backfill_cursor testapp.SparseItem --transform fix_row "
            "--name nightly --restart",
        ),
        ({"strategy": "update", "status": "completed"}, None),
    ],
)
def test_resume_command_is_rebuilt_from_the_spec(fields: dict[str, Any], expected: str) -> None:
    run = Run(name="nightly", model_label="testapp.SparseItem", **fields)
    assert status.resume_command(run) == expected


def test_resume_command_names_another_database() -> None:
    run = Run(name="n", model_label="a.B", strategy="update", spec={"set": {"x": "1"}})
    assert status.resume_command(run, "replica") == (
        "python manage.py backfill_update a.B --set x=1 --name n --database replica"
    )


# -- a real run ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("command", "label", "options"),
    [
        ("backfill_update", "testapp.Tagged", ["--set-json", 'data={"k": [1, "two"]}']),
        (
            "backfill_update",
            "testapp.Counter",
            ["--set", "name=a b", "--set-expr", "hits=F('hits') + 1"],
        ),
        ("backfill_iterate", "testapp.Tagged", ["--set", "name=a b", "--only", "name"]),
        ("backfill_cursor", "testapp.Tagged", ["--set-json", 'data={"k": 1}']),
        ("backfill_cursor", "testapp.Counter", ["--set", "hits=3", "--set", "name=x"]),
    ],
)
def test_a_stopped_set_run_resumes_with_the_printed_command(
    command: str, label: str, options: list[str]
) -> None:
    Tagged.objects.bulk_create(Tagged(name=f"t{i}") for i in range(3))
    Counter.objects.bulk_create(Counter(name=f"c{i}") for i in range(3))
    call_command(command, label, *options, "--progress=none", stdout=StringIO())
    run = Run.objects.get()
    Run.objects.update(status=Run.Status.STOPPED)  # as if stopped before its last chunk

    line = json.loads(runs_command(run.name, "--json"))["resume_command"]
    # JSON values come back as JSON, not as the text of a Python dict.
    for option, value in itertools.pairwise(options):
        if option == "--set-json":
            assert shlex.join(["--set-json", value]) in line

    if "--set-expr" in options:
        # An expression's text cannot be parsed back: the line says what to add.
        assert "<the original --set-expr options>" in line
        line = line.replace(
            "<the original --set-expr options>", "--set-expr \"hits=F('hits') + 1\""
        )
    out = StringIO()
    call_command(*shlex.split(line)[2:], "--progress=none", stdout=out)
    # The same run (not "started as a different backfill"), now completed.
    assert f"Completed run {run.name!r}." in out.getvalue()
    assert list(Run.objects.values_list("name", "status")) == [(run.name, "completed")]


def shout(counter: Counter) -> None:
    if counter.name == "bad":
        raise ValueError("a bad row")
    counter.name = counter.name.upper()


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_shows_its_error_and_resumes_with_the_printed_command() -> None:
    Counter.objects.bulk_create(Counter(name="bad" if i == 7 else f"c{i}") for i in range(1, 11))
    pks = list(Counter.objects.order_by("pk").values_list("pk", flat=True))
    with pytest.raises(CommandError) as failed:
        call_command(
            "backfill_iterate",
            "testapp.Counter",
            "--transform=tests.test_runs_command.shout",
            "--batch-size=3",
            "--progress=none",
            stdout=StringIO(),
        )
    assert failed.value.returncode == 1
    name = Run.objects.get().name

    detail = json.loads(runs_command(name, "--json"))
    assert (detail["state"], detail["rows_scanned"], detail["chunks_done"]) == ("failed", 6, 2)
    assert detail["checkpoint"] == str(pks[5])
    assert f"pk={pks[6]}" in detail["last_error"]
    assert "ValueError: a bad row" in detail["last_error"]
    assert detail["workers"] == []

    Counter.objects.filter(name="bad").update(name="c7")
    command = shlex.split(detail["resume_command"])
    assert command[:2] == ["python", "manage.py"]
    out = StringIO()
    call_command(*command[2:], "--progress=none", stdout=out)

    assert f"Completed run {name!r}." in out.getvalue()
    assert sorted(Counter.objects.values_list("name", flat=True)) == sorted(
        f"C{i}" for i in range(1, 11)
    )
    [listed] = json.loads(runs_command("--json"))
    assert (listed["state"], listed["progress"], listed["checkpoint"]) == ("completed", 1.0, None)
    assert (listed["rows_scanned"], listed["rows_changed"]) == (10, 10)
    assert " completed    100.0% " in runs_command().splitlines()[1]
