"""MySQL/MariaDB: per-chunk session settings, strict writes, row locks, lock waits retried.

The same guarantees as the PostgreSQL tests of test_safety.py, with MySQL's means: a second
connection through mysqlclient, lock waits seen in ``information_schema.INNODB_TRX``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext

import backfill
from backfill import events, mysql, strategies
from backfill.bulk import BulkWriter
from backfill.exceptions import TransformFailed
from backfill.mysql import transient_reason
from example_site.blog.models import BlogPost
from tests.conftest import database_url
from tests.run_support import FakeClock, Recorder, make_counters
from tests.sessions import connect
from tests.support import run, updates_of
from tests.test_safety import run_kind
from tests.testapp.models import Attachment, CodeItem, Counter, SparseItem

pytestmark = [
    pytest.mark.skipif(connection.vendor != "mysql", reason="MySQL/MariaDB only"),
    pytest.mark.django_db(transaction=True),
]

TABLE = Counter._meta.db_table


def session_values(conn: Any = None) -> tuple[Any, ...]:
    sql = (
        "SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.lock_wait_timeout, "
        "@@SESSION.max_statement_time, @@SESSION.sql_mode"
    )
    if conn is not None:
        cursor = conn.cursor()
        cursor.execute(sql)
        return tuple(cursor.fetchone())
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return tuple(cursor.fetchone())


def test_each_chunk_sets_timeouts_and_strict_mode_and_the_session_gets_them_back() -> None:
    make_counters(30)
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = ''")
    before = session_values()
    seen: list[tuple[Any, ...]] = []

    def look(obj: Counter) -> None:
        if obj.pk % 10 == 1:  # once per chunk, inside its transaction
            seen.append(session_values())
        obj.hits = 1

    with CaptureQueriesContext(connection) as queries:
        backfill.iterate(
            Counter.objects.all(),
            transform=look,
            batch_size=10,
            lock_timeout=0.25,
            statement_timeout=3,
        )

    assert [s[:3] for s in seen] == [(1, 1, 3.0)] * 3  # lock waits: whole seconds, at least 1
    assert all(s[3] == "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO" for s in seen)
    # Set before and restored after each chunk's transaction (the last finds no chunk left).
    sets = [q["sql"] for q in queries if q["sql"].startswith("SET ")]
    assert len(sets) == 2 * 4
    assert session_values() == before
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}


def test_a_value_too_long_for_its_column_fails_the_chunk_even_in_a_lax_session() -> None:
    make_counters(30)
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = ''")  # MySQL would truncate with a warning

    def lengthen(row: dict[str, Any]) -> dict[str, Any]:
        return {"name": "x" * 500 if row["pk"] % 10 == 5 else "ok"}

    # Refused before the write (the value checks) or by strict mode (1406): never truncated.
    with pytest.raises(backfill.BackfillError):
        backfill.cursor(Counter.objects.all(), fields=["name"], transform=lengthen, batch_size=10)

    assert not Counter.objects.filter(name="ok").exists()  # the failing chunk rolled back
    assert sorted(Counter.objects.values_list("name", flat=True)) == sorted(
        f"c{i}" for i in range(30)
    )


@pytest.mark.parametrize("kind", ["update", "iterate"])
def test_a_row_locked_elsewhere_is_retried_with_half_the_chunk(kind: str) -> None:
    make_counters(300)
    first = Counter.objects.order_by("pk").values_list("pk", flat=True)[0]
    holder = connect()
    holder.autocommit(False)
    holder.cursor().execute(f"SELECT 1 FROM `{TABLE}` WHERE id = %s FOR UPDATE", [first])
    clock, recorder = FakeClock(), Recorder()

    def meanwhile(seconds: float) -> None:
        holder.commit()  # the application's transaction ends during the backoff

    clock.on_sleep = meanwhile

    try:
        if kind == "update":
            from django.db.models import F

            result = backfill.update(
                Counter.objects.all(),
                set={"hits": F("hits") + 1},
                batch_size=100,
                lock_timeout=1,
                clock=clock,
                reporter=recorder,
            )
        else:

            def bump(obj: Counter) -> None:
                obj.hits += 1

            result = backfill.iterate(
                Counter.objects.all(),
                transform=bump,
                batch_size=100,
                lock_timeout=1,
                clock=clock,
                reporter=recorder,
            )
    finally:
        holder.close()

    retries = recorder.of(events.Retrying)
    assert [(r.reason, r.attempt, r.batch_size) for r in retries] == [("lock timeout", 1, 50)]
    assert "1205" in retries[0].error
    assert [e.rows_scanned for e in recorder.of(events.ChunkDone)] == [50, 100, 100, 50]
    assert result.rows_changed == 300
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}


def test_mysql_error_codes_worth_a_retry() -> None:
    import MySQLdb
    from django.db import OperationalError, ProgrammingError

    def wrapped(django_error: type[Exception], code: int) -> Exception:
        exc = django_error(code, "message")
        exc.__cause__ = MySQLdb.OperationalError(code, "message")
        return exc

    assert transient_reason(wrapped(OperationalError, 1213)) == "deadlock"
    assert transient_reason(wrapped(OperationalError, 1205)) == "lock timeout"
    assert transient_reason(wrapped(OperationalError, 2006)) == "connection lost"
    assert transient_reason(wrapped(OperationalError, 2013)) == "connection lost"
    assert transient_reason(wrapped(ProgrammingError, 1064)) is None  # a syntax error


def test_totals_come_from_table_rows_and_dry_run_explains() -> None:
    make_counters(120)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE TABLE `{TABLE}`")
        cursor.fetchall()
        cursor.execute(
            "SELECT TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            [TABLE],
        )
        estimate = int(cursor.fetchone()[0])

    with CaptureQueriesContext(connection) as queries:
        result = backfill.update(Counter.objects.all(), set={"hits": 3}, dry_run=True)

    assert result.plan is not None
    assert result.plan.estimated_rows == estimate
    assert not [q for q in queries if "COUNT(*)" in q["sql"] and "chunk_keys" not in q["sql"]]
    assert any(f"{TABLE}: type=range key=PRIMARY" in line for line in result.plan.explain)


def test_workers_share_a_run_with_skip_locked(django_db_url: str, run_manage: Any) -> None:
    make_counters(400)

    done = run_manage(
        "backfill_iterate",
        "testapp.Counter",
        "--transform",
        "tests.transforms.count_hit",
        "--batch-size",
        "25",
        "--workers",
        "2",
    )

    assert done.returncode == 0, done.stderr
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}
    assert django_db_url == database_url()


def test_replica_aliases_are_asked_show_replica_status(settings: Any) -> None:
    # The test server is no replica: SHOW REPLICA STATUS has no row, so there is no lag.
    settings.BACKFILL = {"REPLICA_ALIASES": ["default"]}
    make_counters(20)
    recorder = Recorder()

    with CaptureQueriesContext(connection) as queries:
        result = backfill.update(
            Counter.objects.all(),
            set={"hits": 2},
            batch_size=10,
            max_replica_lag=1,
            reporter=recorder,
        )

    assert result.rows_changed == 20
    assert len([q for q in queries if q["sql"] == "SHOW REPLICA STATUS"]) == 3  # before each
    assert not recorder.of(events.Waiting)


def test_update_writes_text_that_differs_only_in_case_or_trailing_spaces() -> None:
    # The column's collation calls all four equal to "ann"; only the last is.
    SparseItem.objects.bulk_create(
        SparseItem(id=i, name=name) for i, name in enumerate(["Ann", "ann ", "ANN", "ann"], 1)
    )

    with CaptureQueriesContext(connection) as queries:
        result = backfill.update(SparseItem.objects.all(), set={"name": "ann"}, batch_size=10)

    assert result.rows_changed == 3
    names = SparseItem.objects.order_by("id").values_list("name", flat=True)
    assert [name.encode() for name in names] == [b"ann"] * 4
    (sql,) = updates_of(queries.captured_queries, SparseItem._meta.db_table)
    assert "AS BINARY" in sql and " OR " in sql  # the collation test first, then the bytes
    assert backfill.update(SparseItem.objects.all(), set={"name": "ann"}).rows_changed == 0


def test_mysql_before_8_0_22_is_asked_by_the_statements_older_name() -> None:
    # SHOW REPLICA STATUS came with MySQL 8.0.22; MariaDB has had it since 10.5.1.
    assert mysql.replica_status(False, (8, 0, 19)) == "SHOW SLAVE STATUS"
    assert mysql.replica_status(False, (8, 0, 22)) == "SHOW REPLICA STATUS"
    assert mysql.replica_status(True, (10, 11, 6)) == "SHOW REPLICA STATUS"
    assert mysql.replica_status(True, connection.mysql_version) == "SHOW REPLICA STATUS"  # type: ignore[attr-defined]


def test_vacuum_every_says_it_has_no_meaning_here() -> None:
    make_counters(5)
    recorder = Recorder()

    backfill.update(Counter.objects.all(), set={"hits": 2}, vacuum_every=0.5, reporter=recorder)

    assert [n.message for n in recorder.of(events.Notice)] == [
        "--vacuum-every is not run on mysql: it VACUUMs PostgreSQL tables."
    ]


# PostgreSQL's results, by hand: whole-number / truncates toward zero, % takes the dividend's
# sign. MySQL's own / would give -3.5000 for -7 / 2 and the assignment would round it to -4.
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('F("views") / 2', [-3, 3, 0, 0]),
        ('F("views") / -2', [3, -3, 0, 0]),
        ('F("views") % 3', [-1, 1, 1, 0]),
        ('F("views") % -3', [-1, 1, 1, 0]),
        ('F("views") * 3 / 2', [-10, 10, 1, 0]),
        ('(F("views") + 1) / 2 * 2', [-6, 8, 2, 0]),
        ('F("id") / F("id") + F("views") % 2', [0, 2, 2, 1]),
        ('Abs(F("views")) / 4 - 1', [0, 0, -1, -1]),
    ],
)
def test_whole_number_arithmetic_gives_postgresqls_results(
    expression: str, expected: list[int]
) -> None:
    SparseItem.objects.bulk_create(
        SparseItem(id=i, views=v) for i, v in enumerate([-7, 7, 1, 0], start=1)
    )

    outcome = run("backfill_update", "testapp.SparseItem", "--set-expr", f"views={expression}")

    assert outcome.returncode == 0, outcome
    assert list(SparseItem.objects.order_by("id").values_list("views", flat=True)) == expected


def test_a_zero_divisor_fails_even_when_the_session_would_give_null() -> None:
    SparseItem.objects.bulk_create(SparseItem(id=i, views=v) for i, v in [(1, 5), (2, 0)])
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = ''")  # a lax session: 1 DIV 0 is NULL there

    outcome = run(
        "backfill_update", "testapp.SparseItem", "--set-expr", 'views=F("id") % F("views")'
    )

    assert outcome.returncode == 1, outcome
    assert "testapp.SparseItem pk=2 was refused by the database" in outcome.error
    assert list(SparseItem.objects.order_by("id").values_list("views", flat=True)) == [5, 0]


def write_counters(changes: list[tuple[int, dict[str, Any]]]) -> str:
    """Write ``changes`` to Counter in one bulk statement under strict mode (as every chunk
    runs), without the value checks that run before it; the statement's SQL."""
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION sql_mode = 'STRICT_TRANS_TABLES'")
        BulkWriter(Counter, connection).write(changes)
    (sql,) = updates_of(queries.captured_queries, TABLE)
    return sql


def test_short_columns_are_joined_chunk_first_and_a_cut_value_still_fails() -> None:
    make_counters(4)
    pks = list(Counter.objects.order_by("pk").values_list("pk", flat=True))

    # name is varchar(50), hits an integer: both travel as short text, so the chunk's rows
    # drive the join and are updated as they are met (no temporary table of joined rows).
    sql = write_counters([(pks[0], {"name": "é" * 50, "hits": 7}), (pks[1], {"name": "b"})])
    assert "STRAIGHT_JOIN" in sql and "varchar(51)" in sql and "varchar(24)" in sql
    assert Counter.objects.get(pk=pks[0]).name == "é" * 50  # all 50 characters, none cut
    assert (Counter.objects.get(pk=pks[0]).hits, Counter.objects.get(pk=pks[1]).name) == (7, "b")

    # JSON_TABLE cuts a longer value to the 51 or 24 characters of its column: still more
    # than the column holds, so strict mode fails the statement instead of storing a cut value.
    for too_big, fits in (({"name": "x" * 500}, {"name": "y"}), ({"hits": 10**30}, {"hits": 3})):
        with pytest.raises(DataError):
            write_counters([(pks[2], too_big), (pks[3], fits)])
    assert list(Counter.objects.filter(pk__in=pks[2:]).values_list("name", "hits")) == [
        ("c2", 0),
        ("c3", 0),
    ]


def test_long_text_and_chunks_too_big_for_memory_keep_the_plain_join() -> None:
    make_counters(80)
    pks = list(Counter.objects.order_by("pk").values_list("pk", flat=True))
    with connection.cursor() as cursor:
        # The smallest the server allows: 16 kB holds about 60 rows of (key, varchar(51)).
        cursor.execute("SET SESSION max_heap_table_size = 16384")
    try:
        few = write_counters([(pk, {"name": f"f{pk}"}) for pk in pks[:40]])
        many = write_counters([(pk, {"name": f"n{pk}"}) for pk in pks])
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION max_heap_table_size = DEFAULT")

    assert "STRAIGHT_JOIN" in few
    assert "STRAIGHT_JOIN" not in many and " JOIN JSON_TABLE(" in many
    assert dict(Counter.objects.values_list("pk", "name")) == {pk: f"n{pk}" for pk in pks}
    posts = BlogPost.objects.bulk_create(BlogPost(title="t", author="a") for _ in range(2))
    titles = ["T" * 255, "U" * 255]
    with CaptureQueriesContext(connection) as queries:
        BulkWriter(BlogPost, connection).write(
            [(p.pk, {"title": t}) for p, t in zip(posts, titles, strict=True)]
        )
    (sql,) = updates_of(queries.captured_queries, BlogPost._meta.db_table)
    assert "STRAIGHT_JOIN" not in sql and "longtext" in sql  # title is varchar(255)
    assert list(BlogPost.objects.order_by("pk").values_list("title", flat=True)) == titles


# -- Rows that all take the same values: listed by key, no JSON table ----------------------------


def test_rows_sharing_their_new_values_are_listed_by_key_and_only_they_are_written() -> None:
    pks = make_counters(6)
    Counter.objects.filter(pk=pks[1]).update(name="same")  # already holds it: not written

    # hits counts the rows an UPDATE reaches, changed or not.
    with on_update("NEW.hits = OLD.hits + 1"), CaptureQueriesContext(connection) as queries:
        result = backfill.cursor(
            Counter.objects.all(),
            fields=["name"],
            transform=lambda row: {"name": "same"},
            batch_size=100,
        )

    (sql,) = updates_of(queries.captured_queries, TABLE)
    changed = [pk for pk in pks if pk != pks[1]]
    # The batch's key range drives; the list filters it (no index lookup per key).
    key = f"`{TABLE}`.`id`"
    assert sql.startswith(
        f"UPDATE `{TABLE}` SET `{TABLE}`.`name` = 'same' WHERE {key} >= {changed[0]} AND "
        f"{key} <= {changed[-1]} AND ({key} + 0) IN ({','.join(map(str, changed))})"
    )
    assert result.rows_changed == 5
    assert dict(Counter.objects.values_list("pk", "hits")) == {
        pk: 0 if pk == pks[1] else 1 for pk in pks
    }
    assert set(Counter.objects.values_list("name", flat=True)) == {"same"}


def test_rows_with_different_values_or_past_the_key_limit_keep_the_json_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pks = make_counters(4)
    with CaptureQueriesContext(connection) as queries:
        backfill.cursor(
            Counter.objects.all(),
            fields=["name"],
            transform=lambda row: {"name": "odd" if row["pk"] % 2 else "even"},
            batch_size=100,
        )
    monkeypatch.setattr(mysql, "MAX_SHARED_KEYS", 3)
    with CaptureQueriesContext(connection) as more:
        backfill.cursor(Counter.objects.all(), set={"hits": 9}, batch_size=100)
    CodeItem.objects.bulk_create(CodeItem(code=f"k{i}", name="n") for i in range(3))
    with CaptureQueriesContext(connection) as text_keys:  # a key that is not a whole number
        backfill.cursor(CodeItem.objects.all(), set={"name": "m"}, batch_size=100)

    assert ["JSON_TABLE" in sql for sql in updates_of(queries.captured_queries, TABLE)] == [True]
    assert ["JSON_TABLE" in sql for sql in updates_of(more.captured_queries, TABLE)] == [True]
    code_table = CodeItem._meta.db_table
    assert ["JSON_TABLE" in sql for sql in updates_of(text_keys.captured_queries, code_table)] == [
        True
    ]
    assert set(CodeItem.objects.values_list("name", flat=True)) == {"m"}
    assert dict(Counter.objects.values_list("pk", "name")) == {
        pk: "odd" if pk % 2 else "even" for pk in pks
    }
    assert set(Counter.objects.values_list("hits", flat=True)) == {9}


def test_a_shared_value_the_column_cannot_hold_fails_under_strict_mode() -> None:
    pks = make_counters(3)
    for too_big in ({"name": "x" * 51}, {"hits": 2**31}):
        with pytest.raises(DataError):
            write_counters([(pk, too_big) for pk in pks])
    assert list(Counter.objects.order_by("pk").values_list("name", "hits")) == [
        ("c0", 0),
        ("c1", 0),
        ("c2", 0),
    ]


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-row"])
def test_bytes_and_null_are_stored_exactly_on_either_write_path(shared: bool) -> None:
    Attachment.objects.bulk_create(Attachment(name=f"a{i}", data=b"old") for i in range(4))
    odd = bytes(range(256)) + b"'\\\"%s"  # every byte, quotes, a backslash, a placeholder

    def new_bytes(row: dict[str, Any]) -> dict[str, Any]:
        return {"data": odd if shared else odd + row["name"].encode()}

    with CaptureQueriesContext(connection) as queries:
        backfill.cursor(Attachment.objects.all(), fields=["name", "data"], transform=new_bytes)
        backfill.cursor(Attachment.objects.filter(name="a1"), set={"data": None})

    table = Attachment._meta.db_table
    first, null = updates_of(queries.captured_queries, table)
    assert ("JSON_TABLE" not in first) == shared and "FROM_BASE64" in first
    assert "JSON_TABLE" not in null  # one row shares its value with itself
    stored = {
        name: None if data is None else bytes(data)
        for name, data in Attachment.objects.values_list("name", "data")
    }
    assert stored == {
        "a0": odd if shared else odd + b"a0",
        "a1": None,
        "a2": odd if shared else odd + b"a2",
        "a3": odd if shared else odd + b"a3",
    }


# -- Each batch's write runs on the server while the transform works on the next ----------------


@contextmanager
def on_update(assignment: str) -> Iterator[None]:
    """A trigger doing ``SET NEW.…`` ``assignment`` to every Counter row an UPDATE reaches."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TRIGGER backfill_test_trigger BEFORE UPDATE ON `{TABLE}` FOR EACH ROW "
            f"SET {assignment}"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS backfill_test_trigger")


def slow_writes(seconds: float) -> Any:
    """Every Counter row an UPDATE changes costs the server ``seconds``, so that a write is
    still running when another session looks."""
    return on_update(f"NEW.hits = NEW.hits + SLEEP({float(seconds)})")


def running(observer: Any, thread: int) -> str:
    """The first word of the statement session ``thread`` runs now ('' when it runs none)."""
    cursor = observer.cursor()
    cursor.execute(
        "SELECT COALESCE(INFO, '') FROM information_schema.PROCESSLIST WHERE ID = %s", [thread]
    )
    (info,) = cursor.fetchone()
    return str(info).split(" ", 1)[0]


def this_session() -> int:
    connection.ensure_connection()
    return int(connection.connection.thread_id())


@pytest.fixture
def batches_of_two(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], int]:
    """Six Counter rows, read in batches of two; their pks and this session's thread id."""
    monkeypatch.setattr(strategies, "FETCH_SIZE", 2)
    return make_counters(6), this_session()


@pytest.mark.parametrize("kind", ["iterate", "cursor"])
def test_a_batch_is_written_while_the_transform_works_on_the_next(
    kind: str, batches_of_two: tuple[list[int], int]
) -> None:
    pks, thread = batches_of_two
    observer = connect()
    seen: dict[int, tuple[str, int]] = {}

    def on_row(pk: int) -> None:
        if pk in (pks[0], pks[2], pks[4]):
            doing = running(observer, thread)
            # A query of the transform's own waits for the write in flight, then sees it.
            seen[pk] = (doing, Counter.objects.filter(hits=1).count())

    try:
        with slow_writes(0.2), CaptureQueriesContext(connection) as queries:
            result = run_kind(kind, batch_size=100, on_row=on_row)
    finally:
        observer.close()

    # Batch 1: nothing sent yet. Batch 2: batch 1's write runs on the server meanwhile, inside
    # the chunk's transaction (this session sees it once collected). Batch 3: batch 2's.
    assert seen == {pks[0]: ("", 0), pks[2]: ("UPDATE", 2), pks[4]: ("UPDATE", 4)}
    # One bulk statement per read batch, each bounded to its batch's keys, in the query log
    # (every row takes hits 1: listed by key, not joined to a JSON table).
    writes = updates_of(queries.captured_queries, TABLE)
    assert len(writes) == 3 and not any("JSON_TABLE" in sql for sql in writes)
    assert all(f"`{TABLE}`.`id` <= {pk}" in sql for sql, pk in zip(writes, pks[1::2], strict=True))
    assert result.rows_changed == 6
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}


@pytest.mark.parametrize("kind", ["iterate", "cursor"])
def test_a_transform_failing_with_a_write_in_flight_rolls_back_on_the_same_session(
    kind: str, batches_of_two: tuple[list[int], int]
) -> None:
    pks, thread = batches_of_two

    def on_row(pk: int) -> None:
        if pk == pks[2]:  # batch 2, with batch 1's write still running
            raise ValueError("bad row")

    with slow_writes(0.2), pytest.raises(TransformFailed, match=r"pk=\d+: ValueError: bad row"):
        run_kind(kind, batch_size=100, on_row=on_row)

    # The write's result was read before the rollback: the session was not dropped for
    # "commands out of sync", and nothing of the chunk stayed.
    assert this_session() == thread
    assert set(Counter.objects.values_list("hits", flat=True)) == {0}
    assert run_kind(kind, batch_size=100, restart=True).rows_changed == 6


def test_an_unbuffered_cursor_class_writes_after_the_last_batch() -> None:
    from MySQLdb.cursors import Cursor, SSCursor

    this_session()
    raw = connection.connection
    assert mysql.sends_ahead(connection)
    raw.cursorclass = SSCursor  # rows would still be on the wire while they are handed out
    try:
        assert not mysql.sends_ahead(connection)
    finally:
        raw.cursorclass = Cursor


def test_a_document_past_the_size_limit_is_split_and_each_half_sent_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(strategies, "FETCH_SIZE", 10)
    monkeypatch.setattr(mysql, "MAX_DOCUMENT_BYTES", 120)  # about five rows of (key, name)
    pks = make_counters(20)

    with CaptureQueriesContext(connection) as queries:
        result = backfill.cursor(
            Counter.objects.all(),
            fields=["name"],
            transform=lambda row: {"name": f"renamed {row['pk']}"},
            batch_size=100,
        )

    writes = [q["sql"] for q in queries.captured_queries if "JSON_TABLE" in q["sql"]]
    # Two read batches of ten rows, each document split until it fits: more statements than
    # batches, every one under the limit, every row written once.
    assert len(writes) > 2
    documents = [sql.split("JSON_TABLE('", 1)[1].split("', '$[*]'")[0] for sql in writes]
    assert all(len(document.replace('\\"', '"')) <= 120 for document in documents)
    assert result.rows_changed == 20
    names = dict(Counter.objects.values_list("pk", "name"))
    assert names == {pk: f"renamed {pk}" for pk in pks}
