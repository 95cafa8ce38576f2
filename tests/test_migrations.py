"""Backfills inside data migrations: RunBackfill and the Python API on historical models.

tests/migrapp carries the migrations: 0002 adds Ticket.slug, 0003 (atomic = False) counts
every row with RunBackfill (``hits`` += 1, reversible) and fills ``slug`` with
``backfill.iterate`` in a RunPython. The tests move migrapp back to 0002, add rows and migrate
forward and backward with the real ``migrate`` command.
"""

from __future__ import annotations

import signal
import sys
import time
import types
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, migrations, transaction
from django.db.migrations.exceptions import IrreversibleError
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.writer import MigrationWriter
from django.db.models import F, Q, Value
from django.db.models.functions import Concat, Lower, Upper
from django.test import override_settings
from django.utils.text import slugify

import backfill
from backfill.exceptions import InsideTransaction, Interrupted, TransformFailed
from backfill.models import Run
from backfill.operations import RunBackfill
from example_site.blog.models import BlogPost
from tests.conftest import RunManage, SpawnManage
from tests.migrapp.models import Ticket

FORWARD = "migration migrapp.0003_backfill #1"
COUNT = "tests.migrapp.transforms.count_hit"
UNCOUNT = "tests.migrapp.transforms.uncount_hit"


def applied(app: str, name: str) -> bool:
    return (app, name) in MigrationRecorder(connection).applied_migrations()


def add_tickets(count: int) -> None:
    Ticket.objects.bulk_create(Ticket(name=f"Ticket {i:03d}") for i in range(count))


def hits() -> list[int]:
    return list(Ticket.objects.order_by("pk").values_list("hits", flat=True))


@pytest.fixture
def at_0002(transactional_db: None) -> Iterator[None]:
    """migrapp migrated to 0002 (slug added, not filled), put back to the latest afterwards."""
    call_command("migrate", "migrapp", "0002", verbosity=0)
    yield
    Ticket.objects.all().delete()
    call_command("migrate", "migrapp", verbosity=0)


def migration_of(*operations: Any, atomic: bool = False, name: str = "0099_check") -> Any:
    """A migration of migrapp made here, as the loader would find it: its module (imported, in
    the app's migrations package) holds a ``Migration`` class with the operations."""
    attrs = {
        "operations": list(operations),
        "atomic": atomic,
        "dependencies": [("migrapp", "0002_ticket_slug")],
    }
    module = types.ModuleType(f"tests.migrapp.migrations.{name}")
    module.Migration = type("Migration", (migrations.Migration,), attrs)  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return module.Migration(name, "migrapp")


def state_at_0002() -> Any:
    return MigrationLoader(connection).project_state(("migrapp", "0002_ticket_slug"))


def apply(migration: Any, *, backwards: bool = False) -> None:
    """What MigrationExecutor does for one migration, without recording it."""
    state = state_at_0002()
    with connection.schema_editor(atomic=migration.atomic) as editor:
        if backwards:
            migration.unapply(state, editor)
        else:
            migration.apply(state, editor)


# -- migrate, forwards and backwards ------------------------------------------------------


def test_migrate_forward_backward_forward(
    at_0002: None, capsys: pytest.CaptureFixture[str]
) -> None:
    add_tickets(25)
    capsys.readouterr()

    call_command("migrate", "migrapp", stdout=StringIO())

    assert hits() == [1] * 25
    assert applied("migrapp", "0003_backfill")
    run = Run.objects.get(name=FORWARD)
    assert (run.status, run.rows_scanned, run.rows_changed, run.chunks_done) == (
        "completed",
        25,
        25,
        3,
    )
    err = capsys.readouterr().err
    assert f"backfill {FORWARD!r}: iterate on migrapp.Ticket at default" in err
    assert f"Completed run {FORWARD!r}: scanned 25 rows, changed 25, 3 chunks in " in err
    # The RunPython beside it filled slugs with backfill.iterate on the historical model.
    assert {t.name: t.slug for t in Ticket.objects.all()} == {
        f"Ticket {i:03d}": f"ticket-{i:03d}" for i in range(25)
    }

    call_command("migrate", "migrapp", "0002", stdout=StringIO())

    assert hits() == [0] * 25
    assert not applied("migrapp", "0003_backfill")
    # The forward run no longer describes the data, so re-applying must run it again.
    assert not Run.objects.filter(name=FORWARD).exists()
    reverse = Run.objects.get(name=f"{FORWARD} reverse")
    assert (reverse.status, reverse.rows_changed) == ("completed", 25)

    call_command("migrate", "migrapp", stdout=StringIO())

    assert hits() == [1] * 25
    assert Run.objects.get(name=FORWARD).status == "completed"
    assert not Run.objects.filter(name=f"{FORWARD} reverse").exists()


def test_migrate_on_an_empty_table_records_no_run(
    at_0002: None, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()

    call_command("migrate", "migrapp", stdout=StringIO())

    assert applied("migrapp", "0003_backfill")
    assert not Run.objects.exists()
    assert capsys.readouterr().err == ""


def test_example_site_fills_author_slug_forward_and_back(transactional_db: None) -> None:
    call_command("migrate", "blog", "0002", verbosity=0)
    # The model as of 0002: today's BlogPost has columns that 0002 does not.
    state = MigrationLoader(connection).project_state(("blog", "0002_blogpost_author_slug"))
    Historical = state.apps.get_model("blog", "BlogPost")
    try:
        Historical.objects.bulk_create(
            [
                Historical(title="a", author="Ada Lovelace"),
                Historical(title="b", author=" Grace  Hopper"),
            ]
        )
        call_command("migrate", "blog", stdout=StringIO())
        slugs = sorted(BlogPost.objects.values_list("author_slug", flat=True))
        assert slugs == ["ada-lovelace", "grace-hopper"]

        call_command("migrate", "blog", "0002", stdout=StringIO())
        assert list(BlogPost.objects.values_list("author_slug", flat=True)) == ["", ""]
        reverse = Run.objects.get(name="migration blog.0003_fill_author_slug #1 reverse")
        assert (reverse.strategy, reverse.rows_changed) == ("update", 2)
    finally:
        BlogPost.objects.all().delete()
        call_command("migrate", "blog", verbosity=0)


# -- refusing to run in a transaction ------------------------------------------------------


@pytest.mark.skipif(
    connection.vendor == "mysql",
    reason="MySQL has no transactional DDL: Django runs no migration in a transaction there, "
    "so an atomic migration's RunBackfill is not inside one",
)
def test_atomic_migration_is_refused_before_writing_anything(at_0002: None) -> None:
    add_tickets(5)
    migration = migration_of(
        RunBackfill("Ticket", transform=COUNT), atomic=True, name="0099_atomic"
    )
    executor = MigrationExecutor(connection)

    with pytest.raises(CommandError) as raised:
        executor.apply_migration(state_at_0002(), migration)

    assert raised.value.returncode == 2
    assert str(raised.value) == (
        "RunBackfill #1 of migration migrapp.0099_atomic: it cannot run in an atomic migration: "
        "a backfill commits chunk by chunk so it can resume. Set `atomic = False` on the "
        "Migration class (and keep schema changes in a separate migration). Nothing was written."
    )
    assert isinstance(raised.value.__cause__, InsideTransaction)
    assert hits() == [0] * 5
    assert not Run.objects.exists()
    assert not applied("migrapp", "0099_atomic")


def test_non_atomic_migration_inside_atomic_block_is_refused(at_0002: None) -> None:
    add_tickets(5)
    migration = migration_of(RunBackfill("Ticket", transform=COUNT))

    with (
        pytest.raises(CommandError, match=r"inside a transaction \(atomic block\)") as raised,
        connection.schema_editor(atomic=False) as editor,
        transaction.atomic(),
    ):
        migration.apply(state_at_0002(), editor)

    assert raised.value.returncode == 2
    assert hits() == [0] * 5
    assert not Run.objects.exists()


# -- stopped migrate resumes -----------------------------------------------------------------


def test_interrupted_migrate_is_not_recorded_and_resumes(
    at_0002: None, spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    add_tickets(120)
    # 20 ms per row: each 10-row chunk takes about 0.2 s, so SIGTERM lands mid-run.
    process = spawn_manage("migrate", "migrapp", env={"MIGRAPP_SLOW": "0.02"})
    deadline = time.monotonic() + 60
    while not Run.objects.filter(name=FORWARD, chunks_done__gte=1).exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the migration never finished a chunk"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=60)

    assert process.returncode == 3, err
    assert (
        "CommandError: RunBackfill #1 of migration migrapp.0003_backfill: Stopped by SIGTERM" in err
    )
    assert not applied("migrapp", "0003_backfill")
    run = Run.objects.get(name=FORWARD)
    assert run.status == "stopped"
    done = hits()
    assert set(done) == {0, 1}
    assert sum(done) == run.rows_scanned == 10 * run.chunks_done

    resumed = run_manage("migrate", "migrapp")

    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after" in resumed.stderr
    assert resumed.stderr.splitlines()[-1].endswith("; run total 120 rows, changed 120, 12 chunks")
    assert hits() == [1] * 120
    assert applied("migrapp", "0003_backfill")
    assert Run.objects.get(name=FORWARD).status == "completed"


# -- the operation's options ---------------------------------------------------------------


def test_filter_exclude_strategies_and_progress(
    at_0002: None, capsys: pytest.CaptureFixture[str]
) -> None:
    Ticket.objects.bulk_create(Ticket(name=n) for n in ["apple", "avocado", "banana", "apricot"])
    migration = migration_of(
        RunBackfill(
            "Ticket",
            set={"slug": Upper("name")},
            filter={"name__startswith": "a"},
            exclude=Q(name="apricot"),
            progress="none",
        ),
        RunBackfill(
            "migrapp.Ticket",
            strategy="cursor",
            transform="tests.test_migrations.row_hits",
            fields=["name"],
            batch_size=2,
            progress="bar",
        ),
    )
    capsys.readouterr()

    apply(migration)

    assert dict(Ticket.objects.values_list("name", "slug")) == {
        "apple": "APPLE",
        "avocado": "AVOCADO",
        "banana": "",
        "apricot": "",
    }
    assert dict(Ticket.objects.values_list("name", "hits")) == {
        "apple": 5,
        "avocado": 7,
        "banana": 6,
        "apricot": 7,
    }
    runs = dict(Run.objects.values_list("name", "strategy"))
    assert runs == {
        "migration migrapp.0099_check #1": "update",
        "migration migrapp.0099_check #2": "cursor",
    }
    err = capsys.readouterr().err
    # #2 drew a tqdm bar (its total is the planner's estimate, so no exact percentage here);
    # #1 printed nothing.
    assert "\rmigrapp.Ticket: " in err
    assert "4.00/" in err
    assert err.count("Completed run") == 1


def row_hits(row: dict[str, Any]) -> dict[str, Any]:
    return {"hits": len(row["name"])}


def raise_on_banana(ticket: Any) -> None:
    if ticket.name == "banana":
        raise ValueError("no bananas")
    ticket.hits = 1


def test_failing_transform_fails_migrate_with_exit_code_1(at_0002: None) -> None:
    Ticket.objects.bulk_create(Ticket(name=n) for n in ["apple", "banana", "cherry"])
    migration = migration_of(
        RunBackfill("Ticket", transform=raise_on_banana, batch_size=1, progress="none")
    )

    with pytest.raises(CommandError) as raised:
        apply(migration)

    assert raised.value.returncode == 1
    assert "Transform 'tests.test_migrations.raise_on_banana' raised on migrapp.Ticket" in str(
        raised.value
    )
    assert isinstance(raised.value.__cause__, TransformFailed)
    # Chunks before the failing one stay committed and checkpointed.
    assert dict(Ticket.objects.values_list("name", "hits")) == {
        "apple": 1,
        "banana": 0,
        "cherry": 0,
    }


def test_max_runtime_stops_with_exit_code_3_and_irreversible_without_reverse(
    at_0002: None,
) -> None:
    add_tickets(4)
    operation = RunBackfill("Ticket", transform=COUNT, batch_size=1, max_runtime=1e-9)
    migration = migration_of(operation)

    with pytest.raises(CommandError, match="Stopped by --max-runtime") as raised:
        apply(migration)

    assert raised.value.returncode == 3
    assert isinstance(raised.value.__cause__, Interrupted)
    assert Run.objects.get().status == "stopped"
    assert not operation.reversible
    with pytest.raises(IrreversibleError):
        apply(migration, backwards=True)


class NoTicketBackfills:
    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        return False if model_name == "ticket" else None


def test_router_can_keep_the_backfill_off_a_database(at_0002: None) -> None:
    add_tickets(3)

    with override_settings(DATABASE_ROUTERS=[NoTicketBackfills()]):
        call_command("migrate", "migrapp", stdout=StringIO())

    assert hits() == [0, 0, 0]
    assert not Run.objects.filter(name=FORWARD).exists()
    # The RunPython asks the router without a model name, so it still ran.
    assert set(Ticket.objects.values_list("slug", flat=True)) != {""}


def test_explicit_name_and_the_run_name_outside_a_migration(at_0002: None) -> None:
    add_tickets(2)
    named = migration_of(
        RunBackfill("Ticket", transform=COUNT, name="count tickets", progress="none")
    )
    apply(named)

    assert hits() == [1, 1]
    assert Run.objects.filter(name="count tickets").exists()

    state = state_at_0002()
    bare = RunBackfill("Ticket", set={"slug": "x"}, progress="none")
    with connection.schema_editor(atomic=False) as editor:
        bare.database_forwards("migrapp", editor, state, state)
    with connection.schema_editor(atomic=False) as editor:
        bare.database_forwards("migrapp", editor, state, state)
    # No migration on the stack: a stable digest of the operation names the run.
    [bare_run] = Run.objects.exclude(name="count tickets")
    assert bare_run.name.startswith("migration migrapp.Ticket ")
    assert (bare_run.status, bare_run.rows_changed) == ("completed", 2)


# -- the Python API on historical models ---------------------------------------------------


def shout(ticket: Any) -> None:
    ticket.slug = ticket.name.upper()


def test_python_api_on_historical_models(transactional_db: None) -> None:
    state = MigrationLoader(connection).project_state(("migrapp", "0003_backfill"))
    Historical = state.apps.get_model("migrapp", "Ticket")
    assert Historical is not Ticket
    assert Historical._meta.label == "migrapp.Ticket"
    Ticket.objects.bulk_create(Ticket(name=n) for n in ["ann", "bob", "cy"])
    tickets = Historical._base_manager.using("default")

    updated = backfill.update(
        tickets.filter(name__startswith="b"), set={"slug": Concat(F("name"), Value("!"))}
    )
    counted = backfill.cursor(tickets.all(), fields=["name"], transform=row_hits, batch_size=2)
    backfill.register("migrapp.Ticket", name="shout")(shout)
    try:
        shouted = backfill.iterate(
            tickets.filter(name="cy").only("name", "slug"), transform="shout"
        )
    finally:
        backfill.registry.unregister("migrapp.Ticket", "shout")
    lowered = backfill.update(tickets.filter(name="ann"), set={"slug": Lower(Value("ANN"))})

    assert [r.rows_changed for r in (updated, counted, shouted, lowered)] == [1, 3, 1, 1]
    assert all(r.model == "migrapp.Ticket" for r in (updated, counted, shouted, lowered))
    assert list(Ticket.objects.order_by("name").values_list("name", "slug", "hits")) == [
        ("ann", "ann", 3),
        ("bob", "bob!", 3),
        ("cy", "CY", 2),
    ]


# -- serialisation -----------------------------------------------------------------------


def test_deconstruct_round_trips_through_the_migration_writer() -> None:
    operation = RunBackfill(
        "blog.BlogPost",
        set={"author": Lower("author")},
        filter={"author__isnull": False},
        reverse_set={"author": ""},
        batch_size=500,
        sleep=0.1,
        progress="log",
    )
    name, args, kwargs = operation.deconstruct()
    assert (name, args) == ("RunBackfill", ["blog.BlogPost"])
    assert kwargs == {
        "set": {"author": Lower("author")},
        "filter": {"author__isnull": False},
        "reverse_set": {"author": ""},
        "progress": "log",
        "batch_size": 500,
        "sleep": 0.1,
    }

    source, imports = MigrationWriter.serialize(operation)
    namespace: dict[str, Any] = {}
    exec("\n".join(sorted(imports)), namespace)
    rebuilt = eval(source, namespace)

    assert isinstance(rebuilt, RunBackfill)
    assert rebuilt.deconstruct() == operation.deconstruct()
    assert rebuilt.describe() == "Backfill blog.BlogPost (update): set author"
    assert rebuilt.reversible
    assert RunBackfill("BlogPost", transform=slugify).describe() == (
        "Backfill BlogPost (iterate): django.utils.text.slugify"
    )
    assert RunBackfill("BlogPost", transform="x.y").migration_name_fragment == "backfill_blogpost"


@pytest.mark.django_db(transaction=True)
def test_sqlmigrate_says_the_backfill_is_not_sql() -> None:
    out = StringIO()

    call_command("sqlmigrate", "migrapp", "0003_backfill", stdout=out)

    assert out.getvalue().splitlines()[:4] == [
        "--",
        "-- Backfill Ticket (iterate): tests.migrapp.transforms.count_hit",
        "--",
        "-- THIS OPERATION CANNOT BE WRITTEN AS SQL",
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"set": {"a": 1}, "workers": 2}, TypeError, "unexpected keyword argument.*workers"),
        ({"set": {"a": 1}, "dry_run": True}, TypeError, "dry_run"),
        ({}, ValueError, "needs set="),
        ({"set": {"a": 1}, "transform": "x.y"}, ValueError, "not both"),
        ({"transform": "x.y", "strategy": "update"}, ValueError, "runs SQL only"),
        ({"set": {"a": 1}, "strategy": "bulk"}, ValueError, "is not one of update, iterate"),
        ({"set": {"a": 1}, "progress": "fancy"}, ValueError, "progress 'fancy'"),
        ({"set": {"a": 1}, "reverse_set": {}, "reverse_transform": "x.y"}, ValueError, "not both"),
    ],
)
def test_malformed_operations_fail_when_the_migration_loads(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RunBackfill("BlogPost", **kwargs)
