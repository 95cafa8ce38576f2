"""How chunks are written: one UPDATE per chunk (per read batch on PostgreSQL), only changed rows
and columns, in bulk."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.models.signals import post_init, post_save
from django.test.utils import CaptureQueriesContext, override_settings

import backfill
from backfill.bulk import text_array
from backfill.models import Run
from backfill.reading import wire_form
from example_site.blog.models import BlogPost
from tests.support import (
    committing,
    postgres_only,
    run,
    seed_posts,
    sqlite_only,
    updates_of,
)
from tests.testapp.models import Column, Place, Restaurant, SparseItem, Tagged

pytestmark = committing

COLUMN_TABLE = "testapp Weird-Table select"


# -- backfill_update: SQL only --------------------------------------------------------------


def test_update_is_one_statement_per_chunk_and_skips_equal_rows_null_safely() -> None:
    # amount: NULL, 5, NULL, 5, ... A plain "amt <> 5" would skip the NULL rows too.
    Column.objects.bulk_create(
        Column(label=f"l{i}", amount=None if i % 2 else 5) for i in range(10)
    )

    with CaptureQueriesContext(connection) as queries:
        outcome = run("backfill_update", "testapp.Column", "--set", "amount=5", "--batch-size", "4")

    assert outcome.returncode == 0, outcome
    assert "scanned 10 rows, changed 5, 3 chunks" in outcome.stdout
    assert set(Column.objects.values_list("amount", flat=True)) == {5}
    writes = updates_of(queries.captured_queries, COLUMN_TABLE)
    assert len(writes) == 3
    assert all(connection.ops.quote_name("amt") in sql for sql in writes)
    distinct = {"sqlite": "IS NOT", "mysql": "<=>"}.get(connection.vendor, "IS DISTINCT FROM")
    assert all(distinct in sql for sql in writes)


def test_update_to_null_skips_rows_already_null() -> None:
    Column.objects.bulk_create(Column(label="x", amount=None if i < 3 else i) for i in range(8))

    outcome = run(
        "backfill_update", "testapp.Column", "--set-json", "amount=null", "--batch-size", "3"
    )

    assert outcome.returncode == 0, outcome
    assert "changed 5," in outcome.stdout
    assert list(Column.objects.values_list("amount", flat=True).distinct()) == [None]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('title=Lower("title")', lambda p: p.title.lower()),
        ('author=Concat(F("author"), Value("!"))', lambda p: p.author + "!"),
        ('author=Concat("title", Value("/"), F("id"))', lambda p: f"{p.title}/{p.pk}"),
        ('author=Upper(Trim("author"))', lambda p: p.author.strip().upper()),
    ],
    ids=["Lower", "Concat F Value", "Concat text and number", "nested"],
)
def test_set_expr_runs_in_sql(expression: str, expected: Any) -> None:
    seed_posts(5, author=" Ann ")
    BlogPost.objects.update(title="Mixed Case")
    before = list(BlogPost.objects.order_by("pk"))

    outcome = run("backfill_update", "blog.BlogPost", "--set-expr", expression)

    assert outcome.returncode == 0, outcome
    field = expression.partition("=")[0]
    after = list(BlogPost.objects.order_by("pk").values_list(field, flat=True))
    assert after == [expected(p) for p in before]


def test_set_expr_arithmetic_changes_every_row_each_run() -> None:
    SparseItem.objects.bulk_create(SparseItem(id=i, views=i) for i in (3, 30, 300))

    first = run("backfill_update", "testapp.SparseItem", "--set-expr", 'views=F("views") + 1')
    again = run(
        "backfill_update", "testapp.SparseItem", "--set-expr", 'views=F("views") + 1', "--restart"
    )

    assert first.returncode == again.returncode == 0
    assert list(SparseItem.objects.order_by("pk").values_list("views", flat=True)) == [5, 32, 302]


def test_update_sets_json() -> None:
    Tagged.objects.bulk_create(Tagged(name=f"t{i}", data={"old": i}) for i in range(4))

    outcome = run(
        "backfill_update", "testapp.Tagged", "--set-json", 'data={"new": [1, 2]}', "--json"
    )
    rerun = run(
        "backfill_update",
        "testapp.Tagged",
        "--set-json",
        'data={"new": [1, 2]}',
        "--restart",
        "--json",
    )

    assert outcome.returncode == rerun.returncode == 0
    assert list(Tagged.objects.values_list("data", flat=True)) == [{"new": [1, 2]}] * 4
    assert '"rows_changed": 0' in rerun.stdout


# -- iterate and cursor: changed rows only, one bulk statement per chunk ----------------------


def _messy_every_other_chunk(pks: list[int], size: int) -> set[int]:
    """Make the rows of chunks 0, 2, 4... need a change; the rest already clean."""
    messy = {pk for i, pk in enumerate(pks) if (i // size) % 2 == 0}
    BlogPost.objects.exclude(pk__in=messy).update(author="Clean Author")
    BlogPost.objects.filter(pk__in=messy).update(author="  messy   author ")
    return messy


@pytest.mark.parametrize(
    ("command", "transform"),
    [("backfill_iterate", "normalize_author"), ("backfill_cursor", "normalize_author_row")],
)
def test_one_bulk_update_per_chunk_with_changes_and_no_per_row_queries(
    command: str, transform: str
) -> None:
    pks = seed_posts(50)
    messy = _messy_every_other_chunk(pks, 10)

    with CaptureQueriesContext(connection) as queries:
        outcome = run(
            command,
            "blog.BlogPost",
            "--only",
            "author",
            "--transform",
            transform,
            "--batch-size",
            "10",
        )

    assert outcome.returncode == 0, outcome
    assert "scanned 50 rows, changed 30, 5 chunks" in outcome.stdout
    assert set(BlogPost.objects.filter(pk__in=messy).values_list("author", flat=True)) == {
        "Messy Author"
    }
    writes = updates_of(queries.captured_queries, "blog_blogpost")
    assert len(writes) == 3  # chunks 1, 3 and 5 changed; 2 and 4 wrote nothing
    # Only the changed column is written.
    qn = connection.ops.quote_name
    assert all(
        f"SET {qn('author')} =" in sql.replace(f"{qn('blog_blogpost')}.", "")
        and f"{qn('title')} =" not in sql
        for sql in writes
    )
    # Per chunk: plan, read, write; never one statement per row (50 rows here).
    touching = [q for q in queries.captured_queries if "blog_blogpost" in q["sql"]]
    assert len(touching) <= 5 * 3 + 4


@postgres_only
def test_postgres_bulk_write_sends_one_array_per_column() -> None:
    pks = seed_posts(40)
    BlogPost.objects.filter(pk__in=pks[::2]).update(title="odd one")

    def fix(row: dict[str, Any]) -> dict[str, Any]:
        changes = {"author": "a"}
        if row["title"] == "odd one":
            changes["title"] = "fixed"
        return changes

    with CaptureQueriesContext(connection) as queries:
        backfill.cursor(
            BlogPost.objects.all(), fields=["title", "author"], transform=fix, batch_size=40
        )

    (write,) = updates_of(queries.captured_queries, "blog_blogpost")
    assert "FROM unnest(" in write
    # No length in the array's type: a cast to varchar(60)[] would cut longer text silently.
    assert "::varchar[]" in write and "::boolean[]" in write
    # keys, author, title, title's "changed" flags, and the chunk's upper bound: 5 parameters
    # for 40 rows (a VALUES list would need 120).
    assert max(int(n) for n in re.findall(r"\$(\d+)", write)) == 5
    # Rows that changed only the author keep their title.
    titles = dict(BlogPost.objects.values_list("pk", "title"))
    assert [titles[pk] for pk in pks[:4]] == ["fixed", "Title 1", "fixed", "Title 3"]
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"a"}


@postgres_only
def test_postgres_bulk_write_keeps_strings_and_nulls_exactly() -> None:
    # Written as the arrays' text form: quoting must keep array syntax inside values as data.
    tricky = ["", "NULL", "a,b", "{c}", 'say "hi"', "back\\slash", " pad ", "two\nlines", "é☃"]
    pks = seed_posts(len(tricky))
    wanted = dict(zip(pks, tricky, strict=True))
    Column.objects.bulk_create(Column(label=f"l{i}", amount=None if i % 2 else 5) for i in range(6))

    posts = backfill.cursor(
        BlogPost.objects.all(),
        fields=["author"],
        transform=lambda row: {"author": wanted[row["pk"]]},
    )
    # None where there was 5 and 7 where there was None: an int array holding NULLs.
    columns = backfill.cursor(
        Column.objects.all(),
        fields=["amount"],
        transform=lambda row: {"amount": None if row["amount"] == 5 else 7},
    )

    assert posts.rows_changed == len(tricky)
    assert dict(BlogPost.objects.values_list("pk", "author")) == wanted
    assert columns.rows_changed == 6
    assert list(Column.objects.order_by("pk").values_list("amount", flat=True)) == [None, 7] * 3


@postgres_only
@pytest.mark.parametrize(
    ("values", "kind", "cast"),
    [
        (["plain", "two words", "é☃"], str, "text[]"),  # nothing to escape: the one-join path
        (["x"], str, "text[]"),
        (['say "hi"', "back\\slash", "{a,b}", "NULL", ""], str, "text[]"),
        (["a", None, "b,c"], str, "text[]"),
        ([1, None, -3, 2**40], int, "bigint[]"),
        ([4, 5], int, "integer[]"),
        ([True, None, False], bool, "boolean[]"),
    ],
)
def test_text_array_reads_back_as_the_same_values(values: list[Any], kind: type, cast: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{cast}", [text_array(values, kind)])
        assert cursor.fetchone()[0] == values


@sqlite_only
def test_sqlite_bulk_write_stays_within_the_parameter_limit() -> None:
    pks = seed_posts(60)
    connection.ensure_connection()
    raw: Any = connection.connection
    limit = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
    previous = raw.setlimit(limit, 50)  # the run ledger's own rows need ~25
    try:
        with CaptureQueriesContext(connection) as queries:
            result = backfill.iterate(
                BlogPost.objects.all(), set={"author": "limited"}, batch_size=60
            )
    finally:
        raw.setlimit(limit, previous)

    assert result.rows_changed == 60
    writes = updates_of(queries.captured_queries, "blog_blogpost")
    # Two parameters per row (key, author), two for the key bounds: 24 rows per statement.
    assert len(writes) == 3
    assert all(sql.startswith("WITH v(") and "VALUES" in sql for sql in writes)
    assert set(BlogPost.objects.filter(pk__in=pks).values_list("author", flat=True)) == {"limited"}


@pytest.mark.parametrize("command", ["backfill_update", "backfill_iterate", "backfill_cursor"])
def test_quoted_table_and_db_column(command: str) -> None:
    Column.objects.bulk_create(Column(label=f"l{i}", amount=i) for i in range(5))

    outcome = run(
        command, "testapp.Column", "--set", "label=Same", "--set", "amount=7", "--batch-size", "2"
    )

    assert outcome.returncode == 0, outcome
    assert list(Column.objects.values_list("label", "amount").distinct()) == [("Same", 7)]


@pytest.mark.parametrize("command", ["backfill_update", "backfill_iterate", "backfill_cursor"])
def test_multi_table_inheritance_child_sets_parent_and_child_fields(command: str) -> None:
    Place.objects.create(name="not a restaurant", city="Lyon")
    for i in range(5):
        Restaurant.objects.create(name=f"r{i}", city="Lyon", rating=i)
    Place.objects.create(name="also not", city="Lyon")

    with CaptureQueriesContext(connection) as queries:
        outcome = run(
            command,
            "testapp.Restaurant",
            "--set",
            "city=Paris",
            "--set",
            "rating=5",
            "--batch-size",
            "2",
        )

    assert outcome.returncode == 0, outcome
    assert "scanned 5 rows, changed 5, 3 chunks" in outcome.stdout
    assert list(Restaurant.objects.values_list("city", "rating").distinct()) == [("Paris", 5)]
    assert set(Place.objects.filter(restaurant__isnull=True).values_list("city", flat=True)) == {
        "Lyon"
    }
    # Each chunk writes each of the two tables once.
    assert len(updates_of(queries.captured_queries, "testapp_place")) == 3
    assert len(updates_of(queries.captured_queries, "testapp_restaurant")) == 3


@pytest.mark.parametrize("command", ["backfill_iterate", "backfill_cursor"])
def test_json_field_written_in_bulk(command: str) -> None:
    Tagged.objects.bulk_create(Tagged(name=f"t{i}", data={"n": i}) for i in range(5))

    def add_key(obj: Tagged) -> None:
        obj.data["seen"] = [True, None]

    def add_key_row(row: dict[str, Any]) -> dict[str, Any]:
        return {"data": {**row["data"], "seen": [True, None]}}

    with CaptureQueriesContext(connection) as queries:
        if command == "backfill_iterate":
            result = backfill.iterate(Tagged.objects.all(), transform=add_key, batch_size=2)
        else:
            result = backfill.cursor(
                Tagged.objects.all(), fields=["data"], transform=add_key_row, batch_size=2
            )

    assert result.rows_changed == 5
    assert [t.data for t in Tagged.objects.order_by("pk")] == [
        {"n": i, "seen": [True, None]} for i in range(5)
    ]
    writes = updates_of(queries.captured_queries, "testapp_tagged")
    assert len(writes) == 3
    if connection.vendor == "postgresql":
        assert all("::jsonb[]" in sql for sql in writes)


def test_iterate_rerun_writes_nothing() -> None:
    seed_posts(12)
    first = run("backfill_iterate", "blog.BlogPost", "--only", "author", "--batch-size", "5")

    with CaptureQueriesContext(connection) as queries:
        again = run(
            "backfill_iterate",
            "blog.BlogPost",
            "--only",
            "author",
            "--batch-size",
            "5",
            "--restart",
            "--json",
        )

    assert first.returncode == again.returncode == 0
    assert '"rows_changed": 0' in again.stdout
    assert '"rows_scanned": 12' in again.stdout
    assert updates_of(queries.captured_queries, "blog_blogpost") == []


# -- --save: per object, so signals fire ------------------------------------------------------


@pytest.fixture
def saved() -> Iterator[list[tuple[int, frozenset[str] | None]]]:
    calls: list[tuple[int, frozenset[str] | None]] = []

    def receiver(sender: Any, instance: BlogPost, update_fields: Any, **kwargs: Any) -> None:
        calls.append((instance.pk, update_fields))

    post_save.connect(receiver, sender=BlogPost, weak=False)
    yield calls
    post_save.disconnect(receiver, sender=BlogPost)


def test_save_fires_post_save_per_changed_object(
    saved: list[tuple[int, frozenset[str] | None]],
) -> None:
    pks = seed_posts(8)
    BlogPost.objects.filter(pk__in=pks[:3]).update(author="Already Clean")
    saved.clear()

    with CaptureQueriesContext(connection) as queries:
        outcome = run("backfill_iterate", "blog.BlogPost", "--only", "author", "--save")

    assert outcome.returncode == 0, outcome
    assert saved == [(pk, frozenset({"author"})) for pk in pks[3:]]
    assert len(updates_of(queries.captured_queries, "blog_blogpost")) == 5
    assert set(BlogPost.objects.values_list("author", flat=True)) == {
        "Already Clean",
        "Some Author",
    }


def test_bulk_mode_fires_no_save_signal(saved: list[tuple[int, frozenset[str] | None]]) -> None:
    seed_posts(8)
    saved.clear()

    outcome = run("backfill_iterate", "blog.BlogPost", "--only", "author")

    assert outcome.returncode == 0, outcome
    assert "changed 8," in outcome.stdout
    assert saved == []


# -- cursor: raw rows, server-side cursor -----------------------------------------------------


@pytest.fixture
def instances() -> Iterator[list[int]]:
    built: list[int] = []

    def receiver(sender: Any, instance: BlogPost, **kwargs: Any) -> None:
        built.append(1)

    post_init.connect(receiver, sender=BlogPost, weak=False)
    yield built
    post_init.disconnect(receiver, sender=BlogPost)


def test_cursor_builds_no_model_instances(instances: list[int]) -> None:
    seed_posts(20)
    instances.clear()

    cursor = run("backfill_cursor", "blog.BlogPost", "--only", "author", "--batch-size", "6")
    built_by_cursor = len(instances)
    iterate = run("backfill_iterate", "blog.BlogPost", "--set", "author=x", "--batch-size", "6")

    assert cursor.returncode == iterate.returncode == 0
    assert "changed 20," in cursor.stdout
    assert built_by_cursor == 0
    assert len(instances) == 20  # the receiver does see the instances iterate builds


def _open_cursors() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_cursors")
        return [name for (name,) in cursor.fetchall()]


@postgres_only
def test_cursor_streams_through_a_server_side_cursor() -> None:
    seed_posts(9)
    seen: list[list[str]] = []

    def transform(row: dict[str, Any]) -> dict[str, Any]:
        seen.append(_open_cursors())
        return {"author": "x"}

    with CaptureQueriesContext(connection) as queries:
        result = backfill.cursor(
            BlogPost.objects.all(), fields=["author"], transform=transform, batch_size=3
        )

    assert result.rows_changed == 9
    assert len(seen) == 9
    assert all(any(name.startswith("backfill_rows_") for name in names) for names in seen)
    declared = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DECLARE ")]
    assert len(declared) == 3
    assert all(
        re.match(
            r'DECLARE "backfill_rows_\d+" NO SCROLL CURSOR FOR SELECT .* FOR NO KEY UPDATE$', sql
        )
        for sql in declared
    )


@postgres_only
def test_cursor_without_server_side_cursors_reads_plain_keyset_queries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    seed_posts(9)
    seen: list[list[str]] = []

    def transform(row: dict[str, Any]) -> dict[str, Any]:
        seen.append(_open_cursors())
        return {"author": "x"}

    with CaptureQueriesContext(connection) as queries:
        result = backfill.cursor(
            BlogPost.objects.all(), fields=["author"], transform=transform, batch_size=3
        )
    outcome = run(
        "backfill_cursor", "blog.BlogPost", "--set", "author=y", "--batch-size", "4", "-v", "2"
    )

    assert result.rows_changed == 9
    assert seen == [[]] * 9
    assert not [q for q in queries.captured_queries if q["sql"].startswith("DECLARE")]
    assert outcome.returncode == 0, outcome
    assert (
        "DISABLE_SERVER_SIDE_CURSORS is set (pgbouncer in transaction mode?): each chunk is read "
        "with a plain keyset query instead of a server-side cursor." in outcome.stderr
    )
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"y"}


def test_cursor_says_how_it_reads_only_at_verbosity_2() -> None:
    seed_posts(3)

    quiet = run("backfill_cursor", "blog.BlogPost", "--set", "author=a")
    loud = run("backfill_cursor", "blog.BlogPost", "--set", "author=b", "-v", "2")

    expected = (
        "Each chunk streams through a server-side cursor."
        if connection.vendor == "postgresql"
        else f"{connection.vendor}: rows are read with plain keyset queries "
        "(no server-side cursor)."
    )
    assert expected in loud.stderr
    assert expected not in quiet.stderr


# -- DEBUG=True: the query log does not grow with the run ---------------------------------------


def test_debug_query_log_is_cleared_per_chunk() -> None:
    seed_posts(60)
    chunks = 30

    with override_settings(DEBUG=True):
        connection.queries_log.clear()
        backfill.iterate(BlogPost.objects.all(), set={"author": "a"}, batch_size=2)
        kept = len(connection.queries_log)
        # The same run with the log forced on (as CaptureQueriesContext does) keeps it all.
        connection.queries_log.clear()
        connection.force_debug_cursor = True
        try:
            backfill.iterate(BlogPost.objects.all(), set={"author": "b"}, batch_size=2)
            forced = len(connection.queries_log)
        finally:
            connection.force_debug_cursor = False
            connection.queries_log.clear()

    assert Run.objects.count() == 2
    bound = 20
    assert kept < bound
    assert forced >= chunks * 3 > bound


def test_a_write_sent_ahead_goes_only_as_exact_text() -> None:
    sql = "UPDATE t SET a = v.a FROM unnest(%s::text[]) v(a) WHERE t.id > %s AND t.c = %s"
    assert wire_form(sql, ['{"a","b"}', 7, "x"], "utf-8") == (
        b"UPDATE t SET a = v.a FROM unnest($1::text[]) v(a) WHERE t.id > $2 AND t.c = $3",
        [b'{"a","b"}', b"7", b"x"],
    )
    # Anything else is refused, and runs through psycopg's own binding at once.
    assert wire_form(sql, ["{a}", True, "x"], "utf-8") is None  # a bool is not a number here
    assert wire_form(sql, ["{a}", 7.5, "x"], "utf-8") is None
    assert wire_form(sql, ["{a\x00b}", 7, "x"], "utf-8") is None  # libpq would cut at the NUL
    assert wire_form(sql, ["{é}", 7, "x"], "ascii") is None  # the encoding cannot hold it
    assert wire_form(sql, ["{a}", 7], "utf-8") is None
    assert wire_form("UPDATE t SET a = %b", [b"\x01"], "utf-8") is None
    assert wire_form("UPDATE t SET a = '%%' || %s", ["x"], "utf-8") is None
