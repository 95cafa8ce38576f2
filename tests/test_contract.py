"""Expand, backfill, contract: deferred RunBackfill, backfill_pending, backfill_verify, and
RequireBackfill, with the real ``migrate`` command.

tests/contractapp: 0002 adds ``Article.slug`` nullable, 0003 defers its fill (a transform with
``needs={"slug__isnull": True}``), 0004 requires the run and makes ``slug`` NOT NULL. The example
site's blog does the same with ``set=`` on ``BlogPost.status`` (0004-0007), deferred by ``"auto"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, migrations
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.writer import MigrationWriter
from django.db.models import F, Q, Value
from django.db.models.functions import Concat, Upper
from django.test import override_settings

from backfill import deferred, recipes
from backfill.control import cancel as request_cancel
from backfill.models import Run, RunRecipe
from backfill.operations import RequireBackfill, RunBackfill
from backfill.verify import verify
from example_site.blog.models import BlogPost
from tests.contractapp.models import Article
from tests.migrapp.models import Ticket
from tests.support import run

SLUG = "contractapp: slug"
STATUS = "blog: BlogPost.status"


def applied(app: str, name: str) -> bool:
    return (app, name) in MigrationRecorder(connection).applied_migrations()


def null_ok(table: str, column: str) -> bool:
    with connection.cursor() as cursor:
        description = connection.introspection.get_table_description(cursor, table)
    return bool(next(c.null_ok for c in description if c.name == column))


def analyze(table: str) -> None:
    """PostgreSQL's estimate (pg_class.reltuples) is only right once the table is analysed."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")


def add_articles(count: int, *, slug: str | None = None, start: int = 0) -> None:
    with connection.cursor() as cursor:
        for i in range(start, start + count):
            cursor.execute(
                "INSERT INTO contractapp_article (title, slug) VALUES (%s, %s)",
                [f"Article {i:03d}", slug],
            )


def slugs() -> list[str | None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT slug FROM contractapp_article ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def migrate(*args: str) -> str:
    out = StringIO()
    call_command("migrate", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def at_0002(transactional_db: None) -> Iterator[None]:
    """contractapp at 0002 (slug nullable, not filled); put back to the latest afterwards."""
    migrate("contractapp", "0002")
    yield
    Run.objects.all().delete()
    RunRecipe.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM contractapp_article")
    migrate("contractapp")


@pytest.fixture
def blog_at_0005(transactional_db: None) -> Iterator[None]:
    """blog at 0005 (status nullable with a default for new rows, not filled)."""
    migrate("blog", "0005")
    yield
    Run.objects.all().delete()
    RunRecipe.objects.all().delete()
    BlogPost.objects.all().delete()
    migrate("blog")


# -- the whole path -----------------------------------------------------------------------


def test_expand_backfill_contract_on_the_example_site(blog_at_0005: None) -> None:
    with connection.cursor() as cursor:
        for i in range(30):
            cursor.execute(
                "INSERT INTO blog_blogpost (title, author, author_slug, status) "
                "VALUES (%s, %s, '', NULL)",
                [f"t{i}", f"a{i}"],
            )
    analyze("blog_blogpost")

    # Above the threshold: 0006 records the run and returns; 0007 stops at RequireBackfill.
    with (
        override_settings(BACKFILL={"DEFER_ABOVE_ROWS": 20}),
        pytest.raises(CommandError) as stopped,
    ):
        migrate("blog")

    assert applied("blog", "0006_backfill_blogpost_status")
    assert not applied("blog", "0007_blogpost_status_not_null")
    assert stopped.value.returncode == 1
    assert str(stopped.value) == (
        f"RequireBackfill: Backfill run {STATUS!r} is pending, not completed: 0.0% (0 of ~30 "
        "rows scanned, 0 chunks). Finish it with: python manage.py backfill_pending "
        "'blog: BlogPost.status' — then run migrate again."
    )
    assert set(BlogPost.objects.values_list("status", flat=True)) == {None}
    pending = Run.objects.get(name=STATUS)
    assert (pending.status, pending.strategy) == ("pending", "update")
    assert RunRecipe.objects.get(name=STATUS).deferred
    assert null_ok("blog_blogpost", "status")

    outcome = run("backfill_pending")

    assert outcome.returncode == 0, outcome
    assert f"Completed run {STATUS!r}. scanned 30 rows, changed 30" in outcome.stdout
    assert set(BlogPost.objects.values_list("status", flat=True)) == {"published"}
    assert run("backfill_verify", STATUS).returncode == 0

    migrate("blog")

    assert applied("blog", "0007_blogpost_status_not_null")
    assert not null_ok("blog_blogpost", "status")


def test_contract_app_path_and_concurrent_inserts(at_0002: None) -> None:
    add_articles(25)

    with pytest.raises(CommandError, match="is pending, not completed") as stopped:
        migrate("contractapp")

    assert "python manage.py backfill_pending 'contractapp: slug'" in str(stopped.value)
    assert slugs() == [None] * 25
    assert null_ok("contractapp_article", "slug")

    # The run is worked in two goes; between them the application inserts rows past the key
    # the run stopped planning at (fixed when it began), without a slug.
    first = run("backfill_pending", "--max-runtime", "0.000001")
    assert first.returncode == 3, first
    assert Run.objects.get(name=SLUG).status == "stopped"
    add_articles(3, start=100)
    resumed = run("backfill_pending", "--json")
    assert resumed.returncode == 0, resumed
    payload = json.loads(resumed.stdout)
    assert payload["status"] == "completed"
    assert [r["status"] for r in payload["runs"]] == ["completed"]
    assert slugs() == [f"article-{i:03d}" for i in range(25)] + [None] * 3

    # Verification catches the late rows; so does RequireBackfill, with the sweep to run.
    check = run("backfill_verify", SLUG)
    assert check.returncode == 1
    late = list(Article.objects.filter(slug__isnull=True).values_list("pk", flat=True))
    assert check.stdout.strip() == (
        f"Run {SLUG!r}: 3 rows still need the change in contractapp.Article (needs "
        f"<Q: (AND: ('slug__isnull', True))>), 1 ranges; pks {', '.join(map(repr, late))}"
    )
    with pytest.raises(CommandError, match=r"3 rows of contractapp\.Article") as held:
        migrate("contractapp")
    assert "python manage.py backfill_pending 'contractapp: slug' --sweep" in str(held.value)

    swept = run("backfill_pending", SLUG, "--sweep")

    assert swept.returncode == 0, swept
    assert "changed 3" in swept.stdout
    assert run("backfill_verify", SLUG).returncode == 0
    migrate("contractapp")
    assert applied("contractapp", "0004_article_slug_not_null")
    assert not null_ok("contractapp_article", "slug")
    assert slugs()[-3:] == ["article-100", "article-101", "article-102"]


def test_a_cancelled_pending_run_is_restarted_by_name(at_0002: None) -> None:
    add_articles(4)
    with pytest.raises(CommandError, match="is pending"):
        migrate("contractapp")

    assert request_cancel(Run.objects.filter(name=SLUG), "ops") == 1
    nothing = run("backfill_pending")
    with pytest.raises(CommandError) as held:
        migrate("contractapp")
    everything = run("backfill_pending", "--restart")
    restarted = run("backfill_pending", SLUG, "--restart")

    assert nothing.stdout == "No pending backfill runs.\n"
    assert "is cancelled, not completed" in str(held.value)
    assert str(held.value).endswith(
        "Finish it with: python manage.py backfill_pending 'contractapp: slug' --restart — "
        "then run migrate again."
    )
    assert everything.returncode == 2
    assert restarted.returncode == 0, restarted
    assert slugs() == [f"article-{i:03d}" for i in range(4)]
    migrate("contractapp")
    assert not null_ok("contractapp_article", "slug")


def test_a_fresh_database_records_no_run_and_the_requirement_holds(at_0002: None) -> None:
    migrate("contractapp")

    assert applied("contractapp", "0004_article_slug_not_null")
    assert not Run.objects.exists()
    # No run, but the operation naming it says what to verify.
    assert verify(SLUG).remaining == 0


def test_reversing_the_requirement_is_a_no_op(at_0002: None) -> None:
    migrate("contractapp")
    Run.objects.create(name=SLUG, strategy="iterate", model_label="contractapp.Article")

    migrate("contractapp", "0003")

    assert not applied("contractapp", "0004_article_slug_not_null")
    assert null_ok("contractapp_article", "slug")
    assert Run.objects.get(name=SLUG).status == "running"


# -- deferring ---------------------------------------------------------------------------


def migration_of(*operations: Any, name: str = "0099_check") -> Any:
    attrs = {
        "operations": list(operations),
        "atomic": False,
        "dependencies": [("migrapp", "0002_ticket_slug")],
    }
    return type("Migration", (migrations.Migration,), attrs)(name, "migrapp")


def apply(migration: Any) -> None:
    state = MigrationLoader(connection).project_state(("migrapp", "0002_ticket_slug"))
    with connection.schema_editor(atomic=False) as editor:
        migration.apply(state, editor)


@pytest.fixture
def tickets(transactional_db: None) -> Iterator[None]:
    call_command("migrate", "migrapp", "0002", verbosity=0)
    Ticket.objects.bulk_create(Ticket(name=f"t{i}") for i in range(6))
    analyze("migrapp_ticket")
    yield
    Ticket.objects.all().delete()
    call_command("migrate", "migrapp", verbosity=0)


@pytest.mark.parametrize(
    ("kwargs", "settings", "deferred_run"),
    [
        ({"defer": "auto", "defer_above": 10}, {}, False),
        ({"defer": "auto", "defer_above": 3}, {}, True),
        ({"defer": "auto"}, {"DEFER_ABOVE_ROWS": 3}, True),
        ({"defer": "auto"}, {}, False),
        ({"defer": True, "defer_above": 10}, {}, True),
    ],
    ids=["below", "above", "setting", "default 100,000", "always"],
)
def test_auto_defers_above_the_estimate(
    tickets: None,
    capsys: pytest.CaptureFixture[str],
    kwargs: dict[str, Any],
    settings: dict[str, Any],
    deferred_run: bool,
) -> None:
    operation = RunBackfill("Ticket", set={"slug": Upper("name")}, name="shout", **kwargs)

    with override_settings(BACKFILL=settings):
        apply(migration_of(operation))

    run_row = Run.objects.get(name="shout")
    kept = RunRecipe.objects.get(name="shout")
    expected = ["" if deferred_run else f"T{i}" for i in range(6)]
    assert list(Ticket.objects.order_by("pk").values_list("slug", flat=True)) == expected
    assert run_row.status == ("pending" if deferred_run else "completed")
    assert kept.deferred is deferred_run
    # Either way the recipe is kept, so the run can be verified and required.
    assert recipes.values(kept.recipe) == {"slug": Upper("name")}
    if deferred_run:
        assert "Recorded run 'shout' as deferred (~6 rows in migrapp.Ticket" in (
            capsys.readouterr().err
        )


def test_a_deferred_run_is_validated_before_it_is_recorded(tickets: None) -> None:
    migration = migration_of(RunBackfill("Ticket", set={"slugg": "x"}, defer=True))

    with pytest.raises(CommandError, match="Unknown field 'slugg'") as raised:
        apply(migration)

    assert raised.value.returncode == 2
    assert not Run.objects.exists()


def test_recipe_round_trips_expressions_and_lookups(tickets: None) -> None:
    operation = RunBackfill(
        "migrapp.Ticket",
        set={"slug": Concat(F("name"), Value("!"))},
        filter=Q(name__startswith="t") & ~Q(name="t5"),
        exclude={"name__in": ["t0", "t1"]},
        defer=True,
        name="bang",
        batch_size=2,
    )
    apply(migration_of(operation))
    stored = RunRecipe.objects.get(name="bang").recipe

    assert recipes.from_data(stored["filter"]) == Q(name__startswith="t") & ~Q(name="t5")
    assert stored["options"] == {"batch_size": 2}

    [result] = deferred.work_pending()

    assert (result.status, result.rows_changed) == ("completed", 3)
    assert dict(Ticket.objects.values_list("name", "slug")) == {
        "t0": "",
        "t1": "",
        "t2": "t2!",
        "t3": "t3!",
        "t4": "t4!",
        "t5": "",
    }
    assert verify("bang").remaining == 0


def local_transform(ticket: Any) -> None:
    ticket.hits = 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transform": lambda t: None}, "cannot be found again by its path"),
        ({"set": {"slug": object()}}, "cannot be stored as data"),
        ({"set": {"slug": "x"}, "defer": "sometimes"}, "defer='sometimes' is not one of"),
        ({"set": {"slug": "x"}, "defer_above": -1}, "defer_above=-1 is not a number"),
    ],
)
def test_what_cannot_be_deferred_fails_when_the_migration_loads(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RunBackfill("Ticket", **{"defer": True, **kwargs})


def test_deconstruct_round_trips_the_new_arguments() -> None:
    operation = RunBackfill(
        "Ticket",
        transform=local_transform,
        needs={"hits": 0},
        defer="auto",
        defer_above=500,
    )
    source, imports = MigrationWriter.serialize(operation)
    namespace: dict[str, Any] = {}
    exec("\n".join(sorted(imports)), namespace)
    rebuilt = eval(source, namespace)

    assert rebuilt.deconstruct() == operation.deconstruct()
    assert operation.deconstruct()[2]["defer_above"] == 500
    assert RequireBackfill("x").deconstruct() == ("RequireBackfill", ["x"], {})
    assert RequireBackfill("x").reversible


# -- the commands ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_backfill_pending_with_nothing_pending() -> None:
    assert run("backfill_pending").stdout == "No pending backfill runs.\n"
    outcome = run("backfill_pending", "--json")
    assert json.loads(outcome.stdout) == {
        "status": "completed",
        "exit_code": 0,
        "message": "0 pending run(s) worked.",
        "runs": [],
        "error": "",
    }


@pytest.mark.django_db(transaction=True)
def test_backfill_pending_and_verify_bad_input() -> None:
    Run.objects.create(name="by hand", strategy="update", model_label="blog.BlogPost")

    unknown = run("backfill_pending", "nope")
    not_deferred = run("backfill_pending", "by hand")
    no_recipe = run("backfill_verify", "by hand")
    sweep_nothing = run("backfill_pending", "--sweep")

    assert unknown.returncode == 2
    assert unknown.error.startswith("No backfill run named 'nope' in database 'default'.")
    assert not_deferred.returncode == 2
    assert "is not a deferred run" in not_deferred.error
    assert no_recipe.returncode == 2
    assert no_recipe.error.startswith("Run 'by hand' has no recipe to rebuild it from")
    assert sweep_nothing.returncode == 2


def test_a_failing_pending_run_exits_1_and_the_next_is_not_started(tickets: None) -> None:
    apply(
        migration_of(
            RunBackfill("Ticket", transform="tests.test_contract.explode", defer=True, name="a"),
            RunBackfill("Ticket", set={"slug": "b"}, defer=True, name="b"),
        )
    )

    outcome = run("backfill_pending")

    assert outcome.returncode == 1
    assert "Transform 'tests.test_contract.explode' raised on migrapp.Ticket" in outcome.error
    assert dict(Run.objects.values_list("name", "status")) == {"a": "failed", "b": "pending"}
    assert run("backfill_runs", "b").stdout.count("python manage.py backfill_pending b") == 1


def explode(ticket: Any) -> None:
    raise RuntimeError("boom")


def test_verify_a_transform_needs_a_lookup(tickets: None) -> None:
    apply(migration_of(RunBackfill("Ticket", transform=local_transform, defer=True, name="h")))

    without = run("backfill_verify", "h")
    given = run("backfill_verify", "h", "--needs", "hits=0", "--json")

    assert without.returncode == 2
    assert "verification needs to know which rows still need it" in without.error
    assert given.returncode == 1
    found = json.loads(given.stdout)
    assert (found["remaining"], found["ok"], len(found["pks"])) == (6, False, 5)

    deferred.work_pending(["h"])

    assert run("backfill_verify", "h", "--needs", "hits=0").returncode == 0
