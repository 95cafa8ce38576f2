"""Issue 11: no value changed that nobody asked for, no run left hanging, every mistake one line.

Each case runs on PostgreSQL and SQLite (the suite runs once per database) unless marked.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, models
from django.db.models.signals import pre_save

import backfill
from backfill.columns import column_check
from backfill.identity import default_name
from backfill.models import Run, Worker
from backfill.strategies import UpdateStrategy
from example_site.blog.models import BlogPost
from tests.conftest import RunManage, SpawnManage
from tests.run_support import (
    FAST,
    FakeClock,
    assert_every_row_once,
    finish,
    make_counters,
    skip_locked_only,
    wait_for,
)
from tests.support import committing, postgres_only, run, seed_posts, snapshot
from tests.testapp.models import Counter, SparseItem, Ticket

pytestmark = committing
EXIT_SEVEN = "tests.transforms.exit_seven"
INTERRUPT = "tests.transforms.interrupt"


def authors() -> list[str]:
    return list(BlogPost.objects.order_by("pk").values_list("author", flat=True))


def only_run() -> Run:
    return Run.objects.get()


# -- 1. every written value checked as the column stores it --------------------------------


@pytest.mark.parametrize(
    ("command", "transform", "problem"),
    [
        ("backfill_iterate", "tests.transforms.long_author", "is 100 characters but the column"),
        ("backfill_cursor", "tests.transforms.long_author_row", "is 100 characters but the"),
        ("backfill_iterate", "tests.transforms.padded_author", "is 63 characters but the"),
        ("backfill_iterate", "tests.transforms.nul_author", "contains a NUL character"),
        ("backfill_cursor", "tests.transforms.surrogate_author_row", "lone surrogate"),
    ],
    ids=["iterate too long", "cursor too long", "trailing spaces", "NUL", "surrogate"],
)
def test_a_value_the_column_cannot_hold_fails_its_chunk_naming_the_row(
    command: str, transform: str, problem: str
) -> None:
    pks = seed_posts(6, author="ann")
    before = snapshot(BlogPost)

    outcome = run(command, "blog.BlogPost", "--transform", transform, "--batch-size", "3")

    assert outcome.returncode == 1, outcome
    assert f"blog.BlogPost pk={pks[0]}: the new author" in outcome.error
    assert problem in outcome.error
    assert "Its chunk was rolled back; earlier chunks are committed" in outcome.error
    assert snapshot(BlogPost) == before
    assert only_run().status == "failed"


def test_save_checks_values_too_and_a_changed_primary_key_is_refused() -> None:
    pks = make_counters(4)
    outcome = run(
        "backfill_iterate", "testapp.Counter", "--transform", "tests.transforms.huge_hits", "--save"
    )
    assert outcome.returncode == 1
    assert f"testapp.Counter pk={pks[0]}: the new hits 1099511627776 is outside" in outcome.error

    moved = run(
        "backfill_iterate",
        "testapp.Counter",
        "--transform",
        "tests.transforms.move_primary_key",
        "--save",
        "--restart",
    )
    assert moved.returncode == 1
    assert "changed the primary key" in moved.error
    assert set(Counter.objects.values_list("name", flat=True)) == {f"c{i}" for i in range(4)}
    assert set(Counter.objects.values_list("hits", flat=True)) == {0}


def test_set_values_are_checked_like_transform_output() -> None:
    seed_posts(2)
    with pytest.raises(backfill.BadInput, match="contains a NUL character"):
        backfill.update(BlogPost.objects.all(), set={"author": "a\x00b"})
    # PostgreSQL's IntegerField validators say it first; SQLite's have no such bound.
    with pytest.raises(backfill.BadInput, match=r"outside the column's range|less than or equal"):
        backfill.update(Counter.objects.all(), set={"hits": 2**40})
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (models.DecimalField(max_digits=5, decimal_places=2), Decimal("1.005"), "rounded"),
        (models.DecimalField(max_digits=5, decimal_places=2), Decimal("1234.5"), "digits before"),
        (models.DecimalField(max_digits=5, decimal_places=2), Decimal("NaN"), "not a finite"),
        (models.FloatField(), float("inf"), "not a finite number"),
        (models.FloatField(), float("nan"), "not a finite number"),
        (models.SmallIntegerField(), 40_000, "outside the column's range"),
        (models.PositiveIntegerField(), -1, "outside the column's range"),
        (models.BigIntegerField(), 2**63, "outside the column's range"),
        (models.JSONField(), {"a": float("nan")}, "not strict JSON"),
        (models.JSONField(), {"a": "\x00"}, "NUL"),
        (models.JSONField(), ["\udce9"], "not strict JSON"),
        (models.TextField(), "ok\udce9", "lone surrogate"),
        (models.CharField(max_length=3), "abcd", "at most 3"),
        (models.CharField(max_length=3), None, "NOT NULL"),
        (models.UUIDField(), "not-a-uuid", "cannot be stored"),
        (models.DateField(), "2026-13-45", "cannot be stored"),
    ],
)
def test_column_check_refuses_what_a_column_would_change(
    field: models.Field, value: Any, problem: str
) -> None:
    found = column_check(field, connection)(value)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (models.DecimalField(max_digits=5, decimal_places=2), Decimal("123.40")),
        (models.CharField(max_length=3), "abc"),
        (models.CharField(max_length=3, null=True), None),
        (models.JSONField(), {"a": [1, "é", None]}),
        (models.BigIntegerField(), -(2**63)),
    ],
)
def test_column_check_accepts_what_fits(field: models.Field, value: Any) -> None:
    assert column_check(field, connection)(value) is None


# -- 2. expressions: the same result on every backend, or refused up front -----------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ('views=F("views") / 0', "/ by zero"),
        ('name=Substr("name", 2, -1)', "argument 3 of Substr(...) must be a whole number"),
        ('views=Abs("name")', "argument 1 of Abs(...) must be a number"),
        ('name=Left("name", 99999999999999999999)', "outside the 64-bit range"),
        ('views=F("views") % 2.5', "% takes whole numbers only"),
        ('views=Greatest("views", Value(None))', "of a nullable argument differs"),
        ('name=Concat("name", Value(1.5))', "Concat(...) takes two or more text"),
        ("views=" + "Abs(" * 150 + '"views"' + ")" * 150, "too large"),
        ("views=" + " + ".join(['F("views")'] * 3000), "too large"),
        ("name=Concat(" + ", ".join(['"name"'] * 2000) + ")", "too large"),
        ("name=Concat(" + ", ".join(['"name"'] * 40) + ")", "at most 32 are allowed"),
        ("name=" + "Lower(" * 5000 + '"name"' + ")" * 5000, "characters; at most"),
    ],
    ids=[
        "divide by zero",
        "negative length",
        "Abs of text",
        "huge literal",
        "float modulo",
        "Greatest of NULL",
        "Concat float",
        "150 nested calls",
        "3000-term sum",
        "2000-argument Concat",
        "40-argument Concat",
        "over 10000 characters",
    ],
)
def test_expressions_that_differ_between_backends_are_refused(
    expression: str, message: str
) -> None:
    SparseItem.objects.bulk_create(SparseItem(id=i, name="n", views=i) for i in range(1, 4))
    before = snapshot(SparseItem)

    outcome = run("backfill_update", "testapp.SparseItem", "--set-expr", expression)

    assert outcome.returncode == 2, outcome
    assert message in outcome.error
    assert "\n" not in outcome.error
    assert snapshot(SparseItem) == before
    assert not Run.objects.exists()


def test_an_expression_result_too_long_for_the_column_fails_naming_the_row() -> None:
    pks = seed_posts(4, author="ann")

    outcome = run(
        "backfill_update",
        "blog.BlogPost",
        "--set-expr",
        'author=LPad("author", 100, Value("*"))',
        "--batch-size",
        "2",
    )

    assert outcome.returncode == 1, outcome
    assert f"blog.BlogPost pk={pks[0]}: the new author would be 100 characters" in outcome.error
    assert set(authors()) == {"ann"}


def test_division_by_a_zero_column_fails_on_every_backend_naming_the_row() -> None:
    SparseItem.objects.bulk_create(SparseItem(id=i, views=0 if i == 3 else 10) for i in (1, 2, 3))

    outcome = run(
        "backfill_update", "testapp.SparseItem", "--set-expr", 'views=F("id") * 100 / F("views")'
    )

    assert outcome.returncode == 1
    assert "testapp.SparseItem pk=3 was refused by the database" in outcome.error
    # PostgreSQL and SQLite say "division by zero", MySQL "Division by 0" (1365).
    assert re.search("division by (zero|0)", outcome.error, re.IGNORECASE), outcome.error
    assert list(SparseItem.objects.order_by("id").values_list("views", flat=True)) == [10, 10, 0]


def test_whole_number_division_truncates_toward_zero_everywhere() -> None:
    SparseItem.objects.bulk_create([SparseItem(id=1, views=-7), SparseItem(id=2, views=7)])

    outcome = run("backfill_update", "testapp.SparseItem", "--set-expr", 'views=F("views") / 2')

    assert outcome.returncode == 0, outcome
    assert list(SparseItem.objects.order_by("id").values_list("views", flat=True)) == [-3, 3]


def test_lower_and_upper_fold_letters_beyond_ascii_everywhere() -> None:
    BlogPost.objects.create(title="ÉCOLE Straße", author="ann")

    lowered = run("backfill_update", "blog.BlogPost", "--set-expr", 'title=Lower("title")')
    assert lowered.returncode == 0, lowered
    assert BlogPost.objects.get().title == "école straße"
    raised = run("backfill_update", "blog.BlogPost", "--set-expr", 'title=Upper("title")')
    assert raised.returncode == 0, raised
    assert BlogPost.objects.get().title == "ÉCOLE STRAßE"


# -- 3. a run's identity is exact ----------------------------------------------------------


def test_a_completed_runs_name_is_refused_for_another_backfill() -> None:
    seed_posts(3, author="ann")
    first = run("backfill_update", "blog.BlogPost", "--set", "author=bob", "--name", "nightly")
    assert first.returncode == 0

    other = run("backfill_update", "blog.BlogPost", "--set", "author=eve", "--name", "nightly")

    assert other.returncode == 2
    assert "Run 'nightly' was started as a different backfill" in other.error
    assert set(authors()) == {"bob"}
    again = run("backfill_update", "blog.BlogPost", "--set", "author=bob", "--name", "nightly")
    assert again.returncode == 0 and "already completed" in again.stdout


def test_derived_names_keep_their_digest_when_cut() -> None:
    long_a = "a" * 300
    first = default_name(
        UpdateStrategy(BlogPost.objects.filter(author=long_a + "1"), {"author": "x"}),
        {"set": {"author": "x"}, "transform": long_a},
    )
    second = default_name(
        UpdateStrategy(BlogPost.objects.filter(author=long_a + "2"), {"author": "x"}),
        {"set": {"author": "x"}, "transform": long_a},
    )
    assert len(first) <= 200 and len(second) <= 200
    assert first != second
    assert first[:-9].endswith("…")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "--name must not be empty"),
        ("   ", "--name must not be empty"),
        ("x" * 201, "is 201 characters; at most 200"),
        ("tab\tname", "control character"),
    ],
    ids=["empty", "blank", "too long", "control"],
)
def test_bad_names_are_refused(name: str, message: str) -> None:
    seed_posts(2)
    outcome = run("backfill_update", "blog.BlogPost", "--set", "author=x", "--name", name)
    assert outcome.returncode == 2
    assert message in outcome.error
    assert not Run.objects.exists()


# -- 4. every option validated before anything is written or recorded -----------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--target-chunk-time", "nan", "must be a finite number"),
        ("--max-rate", "inf", "must be a finite number"),
        ("--lock-timeout", "1e10", "must be at most 2,147,483"),
        ("--statement-timeout", "inf", "must be a finite number"),
        ("--batch-size", "3000000000", "--batch-size must be at most 10,000,000"),
        ("--max-runtime", "nan", "must be a finite number"),
        ("--sleep", "1e9", "must be at most 86,400"),
        ("--max-replica-lag", "0", "must be positive"),
    ],
)
def test_option_values_out_of_range_are_refused_before_anything_is_recorded(
    option: str, value: str, message: str
) -> None:
    seed_posts(3, author="ann")
    outcome = run("backfill_iterate", "blog.BlogPost", "--set", "author=bob", option, value)
    assert outcome.returncode == 2, outcome
    assert message in outcome.error
    assert set(authors()) == {"ann"}
    assert not Run.objects.exists()


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry run"])
@pytest.mark.parametrize("rows", [0, 3], ids=["empty table", "rows"])
def test_an_invalid_regex_filter_is_bad_input_before_the_run_starts(
    dry_run: bool, rows: int
) -> None:
    seed_posts(rows)
    args = ["blog.BlogPost", "--set", "author=x", "--filter", "author__regex=("]
    outcome = run("backfill_update", *args, *(["--dry-run"] if dry_run else []))
    assert outcome.returncode == 2, outcome
    assert "author__regex" in outcome.error or "regular expression" in outcome.error
    assert not Run.objects.exists()


def test_only_with_an_empty_list_is_refused_and_only_the_key_can_set_a_field() -> None:
    seed_posts(3, author="ann")
    empty = run("backfill_iterate", "blog.BlogPost", "--only", "", "--set", "author=x")
    assert empty.returncode == 2
    assert "--only needs at least one field name" in empty.error

    only_id = run("backfill_iterate", "blog.BlogPost", "--only", "id", "--set", "author=bob")
    assert only_id.returncode == 0, only_id
    assert set(authors()) == {"bob"}


@skip_locked_only
def test_more_workers_than_the_server_allows_are_refused_with_the_number() -> None:
    from backfill.validation import free_connections

    seed_posts(3)
    free = free_connections(connection)
    assert free is not None
    many = free + 20  # PostgreSQL's default allows 100 in all, MariaDB's 151
    outcome = run("backfill_update", "blog.BlogPost", "--set", "author=x", "--workers", str(many))
    assert outcome.returncode == 2
    assert f"--workers {many} needs {many} more connections but database 'default' allows" in (
        outcome.error
    )
    assert not Run.objects.exists()


# -- 5. nothing inside a transform leaves a run running or exits outside 0-4 ---------------


def test_a_transform_calling_sys_exit_fails_its_chunk() -> None:
    pks = make_counters(3)
    outcome = run(
        "backfill_iterate", "testapp.Counter", "--transform", "tests.transforms.exit_seven"
    )
    assert outcome.returncode == 1
    assert f"raised on testapp.Counter pk={pks[0]}: SystemExit: 7" in outcome.error
    assert only_run().status == "failed"


def test_a_transform_raising_keyboard_interrupt_stops_the_run() -> None:
    make_counters(3)
    outcome = run(
        "backfill_iterate", "testapp.Counter", "--transform", "tests.transforms.interrupt"
    )
    assert outcome.returncode == 3
    assert only_run().status == "stopped"
    assert set(Counter.objects.values_list("hits", flat=True)) == {0}


def test_an_exception_from_a_save_signal_fails_the_run_in_one_line() -> None:
    make_counters(3)

    def refuse(sender: Any, instance: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit log is down")

    pre_save.connect(refuse, sender=Counter)
    try:
        outcome = run("backfill_iterate", "testapp.Counter", "--transform", FAST, "--save")
    finally:
        pre_save.disconnect(refuse, sender=Counter)
    assert outcome.returncode == 1
    assert "RuntimeError: audit log is down" in outcome.error
    assert only_run().status == "failed"
    assert set(Counter.objects.values_list("hits", flat=True)) == {0}


# -- 7. a constraint violation names the row ----------------------------------------------


def test_a_unique_violation_is_narrowed_to_the_row() -> None:
    Ticket.objects.bulk_create(Ticket(code=f"t{i}") for i in range(20))
    pks = list(Ticket.objects.order_by("pk").values_list("pk", flat=True))

    outcome = run(
        "backfill_iterate",
        "testapp.Ticket",
        "--transform",
        "tests.transforms.same_code",
        "--batch-size",
        "10",
    )

    assert outcome.returncode == 1
    # The first row alone can take the code; the second is the one the database refuses.
    assert f"testapp.Ticket pk={pks[1]} was refused by the database: IntegrityError" in (
        outcome.error
    )
    assert "code" in outcome.error
    assert sorted(Ticket.objects.values_list("code", flat=True)) == sorted(
        f"t{i}" for i in range(20)
    )
    assert only_run().status == "failed"


# -- 8. --json prints one object on every exit ---------------------------------------------


def test_json_prints_one_object_on_every_exit() -> None:
    make_counters(3)
    bad = run("backfill_iterate", "testapp.Counter", "--set", "nope=1", "--json")
    failed = run(
        "backfill_iterate",
        "testapp.Counter",
        "--transform",
        "tests.transforms.exit_seven",
        "--json",
    )
    done = run("backfill_iterate", "testapp.Counter", "--transform", FAST, "--json", "--name", "j")
    usage = run("backfill_iterate", "testapp.Counter", "--no-such-option", "--json")

    for outcome, code, status in [
        (bad, 2, "bad input"),
        (failed, 1, "failed"),
        (done, 0, "completed"),
        (usage, 2, "bad input"),
    ]:
        assert outcome.returncode == code, outcome
        if code == 2 and outcome is usage:
            continue  # call_command's parser errors before options exist; see the subprocess test
        lines = outcome.stdout.splitlines()
        assert len(lines) == 1, outcome.stdout
        data = json.loads(lines[0])
        assert (data["status"], data["exit_code"]) == (status, code)
        assert data["message"]
    assert_every_row_once()


# -- 5, 6, 9: the edge, as an operator sees it (subprocesses) -------------------------------


def test_usage_errors_are_one_line_with_a_hint(run_manage: RunManage) -> None:
    for args in [("backfill_update",), ("backfill_update", "blog.BlogPost", "--nope")]:
        outcome = run_manage(*args)
        assert outcome.returncode == 2
        lines = outcome.stderr.strip().splitlines()
        assert len(lines) == 1, outcome.stderr
        assert "error:" in lines[0] and "--help" in lines[0]

    with_json = run_manage("backfill_update", "blog.BlogPost", "--nope", "--json")
    assert json.loads(with_json.stdout) == {
        "status": "bad input",
        "exit_code": 2,
        "message": json.loads(with_json.stdout)["message"],
    }


def test_text_that_is_not_utf8_in_an_option_is_bad_input(django_db_url: str) -> None:
    from tests.conftest import MANAGE_PY, manage_env

    outcome = subprocess.run(
        [
            sys.executable,
            str(MANAGE_PY),
            "backfill_update",
            "blog.BlogPost",
            "--set",
            "author=x",
            b"--filter=author=caf\xe9",
        ],
        env=manage_env(django_db_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert outcome.returncode == 2, outcome.stderr
    assert "lone surrogate" in outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_an_unreachable_database_is_one_line_without_the_password(run_manage: RunManage) -> None:
    url = "postgres://admin:s3cret-pw@127.0.0.1:1/nowhere"
    outcome = run_manage(
        "backfill_update", "blog.BlogPost", "--set", "author=x", env={"DATABASE_URL": url}
    )
    assert outcome.returncode == 1
    assert "Traceback" not in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1, outcome.stderr
    assert "Cannot use database default (postgresql 127.0.0.1:1/nowhere)" in outcome.stderr
    assert "s3cret-pw" not in outcome.stderr


def test_an_unmigrated_ledger_says_which_migrate_to_run(
    run_manage: RunManage, tmp_path: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    outcome = run_manage(
        "backfill_update", "blog.BlogPost", "--set", "author=x", env={"DATABASE_URL": url}
    )
    assert outcome.returncode == 2, outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert "migrate backfill --database default" in outcome.stderr or "no such table" in (
        outcome.stderr
    )


# -- 6. bookkeeping survives a lost connection ---------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_rerun_finishes_a_run_left_running_with_its_work_done() -> None:
    make_counters(4)
    assert run("backfill_iterate", "testapp.Counter", "--transform", FAST).returncode == 0
    left = only_run()
    Run.objects.filter(pk=left.pk).update(status="running", finished_at=None)
    assert left.heartbeat_at is not None
    Worker.objects.create(
        run=left, host=socket.gethostname(), pid=_dead_pid(), heartbeat_at=left.heartbeat_at
    )

    again = run("backfill_iterate", "testapp.Counter", "--transform", FAST)

    assert again.returncode == 0, again
    assert only_run().status == "completed"
    assert not Worker.objects.exists()
    assert_every_row_once()


@postgres_only
@pytest.mark.parametrize(
    "statement",
    ['INSERT INTO "backfill_run"', 'UPDATE "backfill_run" SET "status"'],
    ids=["while starting", "while finishing"],
)
def test_a_session_terminated_in_the_bookkeeping_is_retried(statement: str) -> None:
    from tests.transforms import terminate_my_session

    make_counters(30)
    fired: list[str] = []

    def terminate_once(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not fired and sql.startswith(statement):
            fired.append(sql)
            terminate_my_session()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(terminate_once):
        result = backfill.iterate(
            Counter.objects.all(), transform=FAST, batch_size=10, clock=FakeClock()
        )

    assert fired
    assert result.status == "completed"
    assert only_run().status == "completed"
    assert not Worker.objects.exists()
    assert_every_row_once()


def test_a_signal_while_django_starts_exits_3_without_a_traceback(
    spawn_manage: SpawnManage, tmp_path: Any
) -> None:
    make_counters(3)
    marker = tmp_path / "loading"
    process = spawn_manage(
        "backfill_iterate",
        "testapp.Counter",
        "--transform",
        FAST,
        env={"BACKFILL_TEST_STARTUP_MARKER": str(marker)},
    )
    wait_for(marker.exists, "Django to load the test models")
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)

    assert code == 3, err
    assert "Traceback" not in err
    assert "while Django was starting" in err
    assert not Run.objects.exists()
