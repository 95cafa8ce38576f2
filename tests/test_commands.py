"""The three commands end to end: their options, --dry-run, re-runs, exit codes 0, 1 and 2."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from backfill.models import Chunk, Run
from example_site.blog.models import BlogPost
from tests.support import ansi, committing, run, seed_posts, snapshot, updates_of
from tests.testapp.models import Counter, SparseItem

pytestmark = committing

COMMANDS = ["backfill_update", "backfill_iterate", "backfill_cursor"]


# -- the article's loop -----------------------------------------------------------------------


def test_article_loop_set_then_registered_transform() -> None:
    """The runbook lines, as written: ``--set`` first, then the blog's registered transform."""
    seed_posts(25, author="  lower   case ")

    first = run(
        "backfill_iterate", "blog.BlogPost", "--only", "author", "--set", "author=Me, myself, and I"
    )
    second = run("backfill_iterate", "blog.BlogPost", "--only", "author")

    assert first.returncode == second.returncode == 0
    assert re.fullmatch(
        r"Completed run 'iterate blog\.BlogPost set author [0-9a-f]{8}'\.\n"
        r"scanned 25 rows, changed 25, 1 chunks in [\d.]+ s \([\d,]+ rows/s\)\n",
        first.stdout,
    ), first.stdout
    assert re.fullmatch(
        r"Completed run 'iterate blog\.BlogPost normalize_author [0-9a-f]{8}'\.\n"
        r"scanned 25 rows, changed 25, 1 chunks in [\d.]+ s \([\d,]+ rows/s\)\n",
        second.stdout,
    ), second.stdout
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"Me, Myself, And I"}


def test_a_different_set_value_is_a_different_run() -> None:
    seed_posts(3)

    first = run("backfill_iterate", "blog.BlogPost", "--set", "author=one")
    second = run("backfill_iterate", "blog.BlogPost", "--set", "author=two")
    cursor = run("backfill_cursor", "blog.BlogPost", "--set", "author=three")
    cursor_again = run("backfill_cursor", "blog.BlogPost", "--set", "author=four")

    assert [o.returncode for o in (first, second, cursor, cursor_again)] == [0, 0, 0, 0]
    assert all(o.stdout.startswith("Completed run") for o in (second, cursor_again))
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"four"}
    assert Run.objects.count() == 4


# -- re-runs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["backfill_update", "blog.BlogPost", "--set", "author=anon"],
        ["backfill_iterate", "blog.BlogPost", "--only", "author"],
        ["backfill_cursor", "blog.BlogPost", "--only", "author"],
    ],
    ids=["update", "iterate", "cursor"],
)
def test_rerunning_a_finished_backfill_writes_nothing(args: list[str]) -> None:
    seed_posts(9)
    first = run(*args, "--batch-size", "4", "--json")
    data = snapshot(BlogPost)

    again = run(*args, "--batch-size", "4")
    with CaptureQueriesContext(connection) as queries:
        restarted = run(*args, "--batch-size", "4", "--restart", "--json")

    assert json.loads(first.stdout)["rows_changed"] == 9
    assert again.returncode == 0
    assert re.fullmatch(
        r"Run '.+' already completed; nothing to do\. Pass --restart to run it again from the "
        r"beginning\.\nrun total: scanned 9 rows, changed 9, 3 chunks\n",
        again.stdout,
    ), again.stdout
    summary = json.loads(restarted.stdout)
    assert (summary["status"], summary["rows_scanned"], summary["rows_changed"]) == (
        "completed",
        9,
        0,
    )
    assert summary["chunks"] == 3
    assert snapshot(BlogPost) == data
    if args[0] != "backfill_update":
        # (update issues its UPDATE per chunk, which matches no row now.)
        assert updates_of(queries.captured_queries, "blog_blogpost") == []


def test_already_completed_as_json() -> None:
    seed_posts(2)
    run("backfill_update", "blog.BlogPost", "--set", "author=a")

    outcome = run("backfill_update", "blog.BlogPost", "--set", "author=a", "--json")

    summary = json.loads(outcome.stdout)
    assert (outcome.returncode, summary["status"], summary["rows_scanned"]) == (
        0,
        "already completed",
        0,
    )
    assert summary["total_rows_changed"] == 2


# -- --only / --defer / --filter / --exclude --------------------------------------------------


def _reads(queries: Any) -> list[str]:
    """The chunk reads (plain SELECTs, or DECLARE … CURSOR FOR SELECT on PostgreSQL)."""
    return [
        ansi(q["sql"])
        for q in queries.captured_queries
        if 'FROM "blog_blogpost"' in ansi(q["sql"])
        and "ORDER BY" in q["sql"]
        and '"blog_blogpost"."author"' in ansi(q["sql"])
    ]


@pytest.mark.parametrize(
    ("command", "option", "loaded", "not_loaded"),
    [
        ("backfill_iterate", ["--only", "author"], ["author"], ["title", "author_slug"]),
        ("backfill_iterate", ["--defer", "title"], ["author", "author_slug"], ["title"]),
        ("backfill_cursor", ["--only", "author"], ["author"], ["title", "author_slug"]),
    ],
    ids=["iterate --only", "iterate --defer", "cursor --only"],
)
def test_only_and_defer_limit_the_columns_read(
    command: str, option: list[str], loaded: list[str], not_loaded: list[str]
) -> None:
    seed_posts(6)

    with CaptureQueriesContext(connection) as queries:
        outcome = run(command, "blog.BlogPost", *option, "--set", "author=x", "--batch-size", "3")

    assert outcome.returncode == 0, outcome
    reads = _reads(queries)
    assert len(reads) == 2
    for sql in reads:
        assert all(f'"blog_blogpost"."{name}"' in sql for name in loaded), sql
        assert not any(f'"blog_blogpost"."{name}"' in sql for name in not_loaded), sql
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"x"}


@pytest.mark.parametrize("command", COMMANDS)
def test_filter_and_exclude(command: str) -> None:
    SparseItem.objects.bulk_create(
        SparseItem(id=i, name="odd" if i % 2 else "even", views=i) for i in range(1, 21)
    )

    outcome = run(
        command,
        "testapp.SparseItem",
        "--set",
        "name=picked",
        "--filter",
        "views__gte=5",
        "--filter",
        "name__in=odd,none",
        "--exclude",
        "id__range=9,13",
        "--batch-size",
        "6",
        "--json",
    )

    assert outcome.returncode == 0, outcome
    picked = list(SparseItem.objects.filter(name="picked").values_list("id", flat=True))
    assert sorted(picked) == [5, 7, 15, 17, 19]
    assert json.loads(outcome.stdout)["rows_changed"] == 5


def test_filter_takes_boolean_words() -> None:
    from tests.testapp.models import UUIDItem

    UUIDItem.objects.bulk_create(UUIDItem(name="n", flag=i < 2) for i in range(5))

    outcome = run(
        "backfill_update", "testapp.UUIDItem", "--set", "name=flagged", "--filter", "flag=Yes"
    )

    assert outcome.returncode == 0, outcome
    assert UUIDItem.objects.filter(name="flagged").count() == 2
    assert not UUIDItem.objects.filter(name="flagged", flag=False).exists()


@pytest.mark.parametrize(
    ("word", "value"), [("TRUE", True), ("yes", True), ("On", True), ("no", False), ("0", False)]
)
def test_set_takes_boolean_words(word: str, value: bool) -> None:
    from tests.testapp.models import UUIDItem

    UUIDItem.objects.bulk_create(UUIDItem(name="n", flag=not value) for _ in range(3))

    outcome = run("backfill_cursor", "testapp.UUIDItem", "--set", f"flag={word}")

    assert outcome.returncode == 0, outcome
    assert set(UUIDItem.objects.values_list("flag", flat=True)) == {value}


@pytest.mark.parametrize("command", COMMANDS)
def test_set_json_sets_json_and_null(command: str) -> None:
    from tests.testapp.models import Column, Tagged

    Tagged.objects.bulk_create(Tagged(name=f"t{i}", data="text") for i in range(3))
    Column.objects.bulk_create(Column(label="l", amount=i) for i in range(3))

    tagged = run(command, "testapp.Tagged", "--set-json", 'data={"list": [1, null]}')
    column = run(command, "testapp.Column", "--set-json", "amount=null", "--set", "label=n")

    assert tagged.returncode == column.returncode == 0
    assert list(Tagged.objects.values_list("data", flat=True)) == [{"list": [1, None]}] * 3
    assert list(Column.objects.values_list("label", "amount").distinct()) == [("n", None)]


# -- --batch-size and --database --------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_batch_size_sets_rows_per_chunk(command: str) -> None:
    seed_posts(11)

    outcome = run(command, "blog.BlogPost", "--set", "author=b", "--batch-size", "4", "--json")

    assert json.loads(outcome.stdout)["chunks"] == 3
    assert list(Chunk.objects.order_by("id").values_list("rows_scanned", flat=True)) == [4, 4, 3]


@pytest.fixture
def other_alias() -> Iterator[str]:
    """A second alias for the same test database, so --database has somewhere else to go."""
    connections.settings["other"] = dict(connections["default"].settings_dict)
    # Connect directly: the test case only lets "default" open connections on demand.
    connections["other"].connect()
    yield "other"
    connections["other"].close()
    del connections["other"]
    del connections.settings["other"]


@pytest.mark.parametrize("command", COMMANDS)
def test_database_option_runs_on_that_alias(command: str, other_alias: str) -> None:
    seed_posts(6)

    with (
        CaptureQueriesContext(connection) as on_default,
        CaptureQueriesContext(connections[other_alias]) as on_other,
    ):
        outcome = run(
            command, "blog.BlogPost", "--set", "author=there", "--database", other_alias, "--json"
        )

    assert outcome.returncode == 0, outcome
    assert json.loads(outcome.stdout)["database"] == "other"
    assert updates_of(on_other.captured_queries, "blog_blogpost")
    assert not [q for q in on_default.captured_queries if "blog_blogpost" in q["sql"]]
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"there"}


# -- --dry-run --------------------------------------------------------------------------------


DRY_RUNS = {
    "update": (
        ["backfill_update", "blog.BlogPost", "--set", "author=anon"],
        r'UPDATE "blog_blogpost" SET "author" = \'anon\' WHERE .*"blog_blogpost"\."id" <= {k3}',
        "author: ' some  author ' -> 'anon'",
        "anon",
    ),
    "iterate": (
        ["backfill_iterate", "blog.BlogPost", "--only", "author"],
        r'SELECT "blog_blogpost"\."id", "blog_blogpost"\."author" FROM "blog_blogpost" WHERE '
        r'"blog_blogpost"\."id" <= {k3} ORDER BY',
        "author: ' some  author ' -> 'Some Author'",
        "Some Author",
    ),
    "cursor": (
        ["backfill_cursor", "blog.BlogPost", "--only", "author"],
        r'SELECT "blog_blogpost"\."id" AS "pk", "blog_blogpost"\."author" AS "author" FROM '
        r'"blog_blogpost" WHERE "blog_blogpost"\."id" <= {k3} ORDER BY',
        "author: ' some  author ' -> 'Some Author'",
        "Some Author",
    ),
}


@pytest.mark.parametrize(
    ("args", "sql", "change", "unchanged"), DRY_RUNS.values(), ids=DRY_RUNS.keys()
)
def test_dry_run_prints_the_plan_and_a_preview_and_writes_nothing(
    args: list[str], sql: str, change: str, unchanged: str
) -> None:
    pks = seed_posts(8)
    BlogPost.objects.filter(pk=pks[1]).update(author=unchanged)  # so it is not previewed
    before = snapshot(BlogPost)

    outcome = run(*args, "--dry-run", "--batch-size", "3")

    assert outcome.returncode == 0, outcome
    lines = outcome.stdout.splitlines()
    assert re.fullmatch(r"Dry run of '.+' on database 'default'; nothing is written\.", lines[0])
    assert lines[1:5] == [
        "  table            blog_blogpost",
        f"  primary keys     {pks[0]} .. {pks[-1]}",
        lines[3],
        lines[4],
    ]
    assert re.fullmatch(r"  estimated rows   [\d,]+", lines[3])
    assert re.fullmatch(r"  chunks           ~\d+ of 3 rows", lines[4])
    assert lines[5] == "First chunk:"
    assert re.match("  " + sql.format(k3=pks[2]), ansi(lines[6])), lines[6]
    preview = lines[lines.index("Preview of the first chunk (2 changed rows shown):") + 1 :]
    assert preview == [f"  pk={pks[0]}  {change}", f"  pk={pks[2]}  {change}"]
    assert outcome.stderr == ""
    assert snapshot(BlogPost) == before
    assert not Run.objects.exists()


def test_dry_run_preview_is_at_most_five_rows_and_rolled_back() -> None:
    """The transform's own writes during the preview are rolled back too."""
    pks = seed_posts(12)

    def counting(row: dict[str, Any]) -> dict[str, Any]:
        Counter.objects.create(name=f"saw {row['pk']}")
        return {"author": "new"}

    import backfill

    result = backfill.cursor(
        BlogPost.objects.all(), fields=["author"], transform=counting, dry_run=True
    )

    assert result.status == "dry run"
    assert result.plan is not None
    assert [row["pk"] for row in result.plan.preview] == pks[:5]
    assert result.plan.preview[0] == {
        "pk": pks[0],
        "before": {"author": " some  author "},
        "after": {"author": "new"},
    }
    assert not Counter.objects.exists()
    assert set(BlogPost.objects.values_list("author", flat=True)) == {" some  author "}
    assert not Run.objects.exists()


def test_dry_run_json() -> None:
    seed_posts(4)

    outcome = run("backfill_update", "blog.BlogPost", "--set", "author=z", "--dry-run", "--json")

    summary = json.loads(outcome.stdout)
    assert summary["status"] == "dry run"
    plan = summary["plan"]
    assert (plan["table"], plan["batch_size"], len(plan["preview"])) == ("blog_blogpost", 1000, 4)
    assert ansi(plan["statements"][0]).startswith('UPDATE "blog_blogpost" SET "author" = \'z\'')
    assert not Run.objects.exists()


def test_dry_run_of_an_empty_table() -> None:
    outcome = run("backfill_iterate", "blog.BlogPost", "--set", "author=z", "--dry-run")

    assert outcome.returncode == 0
    assert "  primary keys     None .. None" in outcome.stdout
    assert "Preview: no row of the first chunk would change." in outcome.stdout


# -- exit codes -------------------------------------------------------------------------------


def test_empty_table_completes_with_exit_0() -> None:
    outcome = run("backfill_cursor", "blog.BlogPost", "--set", "author=z", "--json")

    summary = json.loads(outcome.stdout)
    assert (outcome.returncode, summary["status"], summary["chunks"]) == (0, "completed", 0)


def test_a_database_error_in_a_chunk_exits_1_and_keeps_earlier_chunks() -> None:
    # Dividing by zero fails on PostgreSQL; on SQLite it gives NULL, which NOT NULL rejects.
    SparseItem.objects.bulk_create(
        SparseItem(id=i, views=0 if i == 7 else 100) for i in range(1, 11)
    )

    outcome = run(
        "backfill_update",
        "testapp.SparseItem",
        "--set-expr",
        'views=F("id") * 1000 / F("views")',
        "--batch-size",
        "3",
    )

    assert outcome.returncode == 1
    assert "Earlier chunks are committed" in outcome.error
    assert "re-run the same command to resume" in outcome.error
    views = list(SparseItem.objects.order_by("id").values_list("views", flat=True))
    # Chunks (…, 3] and (3, 6] committed; (6, 9] failed on id 7 and rolled back; 10 never ran.
    assert views == [10, 20, 30, 40, 50, 60, 0, 100, 100, 100]
    failed = Run.objects.get()
    assert (failed.status, failed.chunks_done) == ("failed", 2)
