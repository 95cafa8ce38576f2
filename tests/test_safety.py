"""Production safety on PostgreSQL: per-chunk timeouts, row locks, VACUUM, estimates, EXPLAIN.

Concurrency here is real: a second connection (psycopg, in a thread) holds or wants the rows a
chunk works on, and the tests wait for conditions PostgreSQL reports (``pg_blocking_pids``),
never for a guessed amount of time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

import backfill
from backfill import events
from tests import sessions
from tests.run_support import FakeClock, Recorder, make_counters
from tests.sessions import WAIT_LIMIT, connect
from tests.support import postgres_only, row_locks_only, sqlite_only
from tests.testapp.models import Counter, Place, Restaurant

TABLE = Counter._meta.db_table
TABLE_LABEL = "testapp.Counter"


def backend_pid() -> int:
    connection.ensure_connection()
    return int(connection.connection.info.backend_pid)


def blocked(observer: Any, waiter: int, holder: int) -> bool:
    """Wait until backend ``waiter`` waits for a lock ``holder`` holds; False after the limit."""
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline:
        row = observer.execute("SELECT %s = ANY(pg_blocking_pids(%s))", [holder, waiter]).fetchone()
        if row[0]:
            return True
        time.sleep(0.005)
    return False


class RowHolder(threading.Thread):
    """Another transaction: locks rows with ``sql`` and commits when ``release()`` is called."""

    def __init__(self, sql: str, params: list[Any]) -> None:
        super().__init__(daemon=True)
        self.conn = connect()
        self.pid = int(self.conn.info.backend_pid)
        self.sql, self.params = sql, params
        self.holding = threading.Event()
        self.released = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.conn.transaction():
                self.conn.execute(self.sql, self.params)
                self.holding.set()
                self.released.wait(WAIT_LIMIT)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.holding.set()
            self.conn.close()

    def __enter__(self) -> RowHolder:
        self.start()
        assert self.holding.wait(WAIT_LIMIT)
        return self

    def release(self) -> None:
        self.released.set()
        self.join(WAIT_LIMIT)

    def released_by_backoff(self, clock: FakeClock) -> FakeClock:
        """``clock``, whose sleep (the run's retry backoff) first commits this transaction."""
        clock.on_sleep = lambda seconds: self.release()
        return clock

    def __exit__(self, *exc: object) -> None:
        self.release()
        assert self.error is None, self.error


@pytest.fixture
def no_autovacuum() -> Iterator[None]:
    """Keep autovacuum and autoanalyze off the test table, so sizes and estimates hold still."""
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{TABLE}" SET (autovacuum_enabled = false)')
    yield
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{TABLE}" RESET (autovacuum_enabled)')


def analyze() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'ANALYZE "{TABLE}"')


def run_kind(
    kind: str, *, on_row: Callable[[Any], None] = lambda pk: None, **options: Any
) -> backfill.Result:
    """One backfill adding 1 to every Counter's hits, with each strategy; a Python transform
    calls ``on_row`` with each row's pk before it changes the row."""
    if kind == "update":
        return backfill.update(Counter.objects.all(), set={"hits": F("hits") + 1}, **options)
    if kind == "iterate":

        def bump(obj: Counter) -> None:
            on_row(obj.pk)
            obj.hits += 1

        return backfill.iterate(Counter.objects.all(), transform=bump, **options)

    def bump_row(row: dict[str, Any]) -> dict[str, Any]:
        on_row(row["pk"])
        return {"hits": row["hits"] + 1}

    return backfill.cursor(Counter.objects.all(), fields=["hits"], transform=bump_row, **options)


# -- SET LOCAL timeouts ---------------------------------------------------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, ("5s", "1min")), ({"lock_timeout": 0.25, "statement_timeout": 3}, ("250ms", "3s"))],
)
def test_each_chunk_sets_its_timeouts_locally(
    options: dict[str, Any], expected: tuple[str, str]
) -> None:
    make_counters(30)
    seen: list[tuple[str, str]] = []

    def look(obj: Counter) -> None:
        if obj.pk % 10 == 1:  # once per chunk, inside its transaction
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
                )
                seen.append(cursor.fetchone())
        obj.hits = 1

    with CaptureQueriesContext(connection) as queries:
        backfill.iterate(Counter.objects.all(), transform=look, batch_size=10, **options)

    assert seen == [expected] * 3
    # One per chunk's transaction (the last one finds no chunk left): SET LOCAL does not
    # outlive its transaction, so each sets it again, and the session keeps the server's.
    set_config = [q["sql"] for q in queries if "set_config" in q["sql"]]
    assert len(set_config) == 4
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('lock_timeout')")
        assert cursor.fetchone() == ("0",)


# -- retried with half the chunk ------------------------------------------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["update", "iterate"])
@pytest.mark.parametrize(
    ("timeouts", "reason"),
    [
        ({"lock_timeout": 0.2}, "lock timeout"),
        ({"lock_timeout": 30, "statement_timeout": 0.2}, "statement timeout"),
    ],
)
def test_a_row_locked_elsewhere_is_retried_with_half_the_chunk(
    kind: str, timeouts: dict[str, Any], reason: str
) -> None:
    make_counters(300)
    first = Counter.objects.order_by("pk").values_list("pk", flat=True)[0]
    clock, recorder = FakeClock(), Recorder()
    holder = RowHolder(f'SELECT 1 FROM "{TABLE}" WHERE id = %s FOR UPDATE', [first])
    sleep = holder.released_by_backoff(clock)

    with holder:
        result = run_kind(kind, batch_size=100, clock=sleep, reporter=recorder, **timeouts)

    retries = recorder.of(events.Retrying)
    assert [(r.reason, r.attempt, r.batch_size) for r in retries] == [(reason, 1, 50)]
    assert reason.split()[0] in retries[0].error  # "canceling statement due to lock timeout"
    assert clock.slept == [0.5]  # RETRY_BACKOFF
    # The retry is half the chunk; the fixed size then doubles back.
    assert [e.rows_scanned for e in recorder.of(events.ChunkDone)] == [50, 100, 100, 50]
    assert result.status == "completed"
    assert result.rows_changed == 300
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_deadlock_is_retried_and_both_writes_survive() -> None:
    make_counters(20)
    pks = list(Counter.objects.order_by("pk").values_list("pk", flat=True))
    a, b = pks[0], pks[4]
    runner = backend_pid()
    recorder = Recorder()
    observer = connect()
    other = connect()
    ready, done = threading.Event(), threading.Event()

    def interleave() -> None:
        # Hold b; once the chunk (which locked a first) waits for b, ask for a: a deadlock
        # that the chunk's backend detects first (shorter deadlock_timeout), so it is the victim.
        with other.transaction():
            other.execute("SET LOCAL deadlock_timeout = '60s'")
            other.execute(f'UPDATE "{TABLE}" SET name = %s WHERE id = %s', ["other", b])
            ready.set()
            if blocked(observer, runner, int(other.info.backend_pid)):
                other.execute(f'UPDATE "{TABLE}" SET name = %s WHERE id = %s', ["other", a])
        done.set()

    thread = threading.Thread(target=interleave, daemon=True)
    with connection.cursor() as cursor:
        cursor.execute("SET deadlock_timeout = '300ms'")
    try:
        thread.start()
        assert ready.wait(WAIT_LIMIT)
        clock = FakeClock()

        def meanwhile(seconds: float) -> None:
            assert done.wait(WAIT_LIMIT)

        clock.on_sleep = meanwhile
        result = run_kind("iterate", batch_size=10, clock=clock, reporter=recorder)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET deadlock_timeout")
        thread.join(WAIT_LIMIT)
        observer.close()
        other.close()

    retries = recorder.of(events.Retrying)
    assert [(r.reason, r.batch_size) for r in retries] == [("deadlock", 5)]
    assert result.status == "completed"
    rows = dict(Counter.objects.filter(pk__in=[a, b]).values_list("pk", "name"))
    assert rows == {a: "other", b: "other"}
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}


# -- rows locked before a Python transform reads them ---------------------------------------------


@row_locks_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["iterate", "cursor"])
def test_a_concurrent_write_during_the_chunk_waits_and_then_wins(kind: str) -> None:
    make_counters(20)
    pks = list(Counter.objects.order_by("pk").values_list("pk", flat=True))
    target = pks[6]  # a later row of the first chunk
    observer, writer = sessions.connect(), sessions.connect()
    writer_id = sessions.session_id(writer)  # asked before the writer's thread uses it
    table = connection.ops.quote_name(TABLE)
    seen: dict[str, Any] = {}

    def write() -> None:
        sql = f"UPDATE {table} SET hits = hits + 100 WHERE id = %s"
        sessions.execute(writer, sql, [target])

    thread = threading.Thread(target=write, daemon=True)

    def on_row(pk: int) -> None:
        if pk == pks[0]:
            thread.start()
            # The application's UPDATE of a row this chunk read must wait for the chunk.
            seen["blocked"] = sessions.waits_for_a_lock(observer, writer_id)
        if pk == pks[9]:
            seen["writer still waiting"] = thread.is_alive()

    try:
        run_kind(kind, batch_size=10, on_row=on_row)
        thread.join(WAIT_LIMIT)
    finally:
        observer.close()
        writer.close()

    assert seen == {"blocked": True, "writer still waiting": True}
    assert Counter.objects.get(pk=target).hits == 101  # the backfill's +1, then the app's +100
    assert set(Counter.objects.exclude(pk=target).values_list("hits", flat=True)) == {1}


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["iterate", "cursor"])
def test_a_chunk_waits_for_a_concurrent_write_and_transforms_its_result(kind: str) -> None:
    make_counters(20)
    target = list(Counter.objects.order_by("pk").values_list("pk", flat=True))[6]
    runner = backend_pid()
    observer = connect()
    holder = RowHolder(f'UPDATE "{TABLE}" SET hits = hits + 100 WHERE id = %s', [target])
    seen: dict[str, bool] = {}

    def commit_once_the_chunk_waits() -> None:
        seen["chunk waited"] = blocked(observer, runner, holder.pid)
        holder.released.set()

    watcher = threading.Thread(target=commit_once_the_chunk_waits, daemon=True)
    try:
        with holder:
            watcher.start()
            run_kind(kind, batch_size=10)
            watcher.join(WAIT_LIMIT)
    finally:
        observer.close()

    assert seen == {"chunk waited": True}
    # Read after the application's commit: 100 + 1. A stale read would have written 1.
    assert Counter.objects.get(pk=target).hits == 101


# -- VACUUM between slices ------------------------------------------------------------------------


def vacuum_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = to_regclass(%s)",
            [f'"{TABLE}"'],
        )
        return int(cursor.fetchone()[0])


def heap_pages() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(to_regclass(%s)) / 8192", [f'"{TABLE}"'])
        return int(cursor.fetchone()[0])


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_vacuum_every_share_of_the_table(no_autovacuum: None) -> None:
    make_counters(1000)
    analyze()
    before = vacuum_count()
    recorder = Recorder()

    run_kind("update", batch_size=100, vacuum_every=0.25, reporter=recorder)

    notices = [n.message for n in recorder.of(events.Notice) if "VACUUM" in n.message]
    assert [re.sub(r"took [\d.]+ s", "took … s", m) for m in notices] == [
        f'VACUUM "{TABLE}" after {rows} rows took … s' for rows in ("300", "500", "800", "1,000")
    ]
    assert vacuum_count() - before == 4


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_vacuum_every_also_vacuums_the_parent_tables_of_a_child_model() -> None:
    for i in range(10):
        Restaurant.objects.create(name=f"r{i}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE testapp_restaurant, testapp_place")
    recorder = Recorder()

    backfill.update(
        Restaurant.objects.all(),
        set={"city": "Rome"},
        batch_size=5,
        vacuum_every=0.5,
        reporter=recorder,
    )

    notices = [n.message for n in recorder.of(events.Notice) if "VACUUM" in n.message]
    assert [re.sub(r"took [\d.]+ s", "took … s", m) for m in notices] == [
        f'VACUUM "testapp_restaurant", "testapp_place" after {rows} rows took … s'
        for rows in ("5", "10")
    ]
    assert set(Place.objects.values_list("city", flat=True)) == {"Rome"}


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_vacuum_every_keeps_a_full_rewrite_from_doubling_the_heap(no_autovacuum: None) -> None:
    def rewrite(**options: Any) -> float:
        with connection.cursor() as cursor:
            cursor.execute(f'TRUNCATE "{TABLE}"')
        make_counters(20_000)
        analyze()
        pages = heap_pages()
        run_kind("update", batch_size=1000, restart=True, **options)
        return heap_pages() / pages

    without = rewrite()
    with_vacuum = rewrite(vacuum_every=0.1)

    assert without > 1.8  # every row has a dead version and a live one
    assert with_vacuum < 1.35, (without, with_vacuum)


# -- totals: estimates, not COUNT(*) --------------------------------------------------------------

TABLE_COUNT = re.compile(rf'COUNT\(\*\)( AS "__count")? FROM "{TABLE}"(?! WHERE)')


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_totals_are_estimated_without_counting_the_table(no_autovacuum: None) -> None:
    make_counters(1000)
    analyze()
    Counter.objects.filter(pk__in=Counter.objects.order_by("pk").values("pk")[:600]).delete()
    recorder = Recorder()

    with CaptureQueriesContext(connection) as queries:
        run_kind("update", batch_size=500, reporter=recorder, name="estimated")

    assert not [q["sql"] for q in queries if TABLE_COUNT.search(q["sql"])]
    # The planner's figure: 1,000 rows analysed, the 600 deleted since are not counted.
    assert recorder.of(events.Started)[0].estimated_rows == 1000

    recorder = Recorder()
    with CaptureQueriesContext(connection) as queries:
        run_kind("update", batch_size=500, reporter=recorder, name="exact", count="exact")

    assert len([q for q in queries if TABLE_COUNT.search(q["sql"])]) == 1
    assert recorder.of(events.Started)[0].estimated_rows == 400


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_estimate_follows_a_table_that_grew_since_analyze(no_autovacuum: None) -> None:
    make_counters(1000)
    analyze()
    make_counters(1000)
    out = StringIO()

    call_command("backfill_update", TABLE_LABEL, "--set", "hits=1", "--dry-run", stdout=out)

    found = re.search(r"estimated rows +([\d,]+)", out.getvalue())
    assert found is not None
    estimate = int(found[1].replace(",", ""))
    assert 1800 <= estimate <= 2200  # reltuples said 1,000; the heap is twice as large


@pytest.mark.django_db(transaction=True)
def test_count_exact_counts_and_dry_run_shows_it() -> None:
    make_counters(37)
    out = StringIO()

    call_command(
        "backfill_update",
        TABLE_LABEL,
        "--set",
        "hits=1",
        "--dry-run",
        "--count",
        "exact",
        stdout=out,
    )

    assert "  estimated rows   37\n" in out.getvalue()


# -- --dry-run's EXPLAIN and its warning ----------------------------------------------------------


def dry_run(*args: str) -> str:
    out = StringIO()
    call_command("backfill_update", TABLE_LABEL, "--set", "hits=1", "--dry-run", *args, stdout=out)
    return out.getvalue()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_dry_run_explains_and_a_sparse_unindexed_filter_does_not_warn(
    no_autovacuum: None,
) -> None:
    make_counters(20_000)
    analyze()

    out = dry_run("--filter", "name=c12345", "--batch-size", "2000")

    assert "EXPLAIN of the first chunk's read:" in out
    assert re.search(rf'Index Scan using \S+ on "?{TABLE}"?', out), out
    assert "Filter: ((name)::text = 'c12345'::text)" in out
    assert "warning:" not in out


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_dry_run_warns_when_the_first_chunk_reads_the_whole_table(no_autovacuum: None) -> None:
    make_counters(100)
    analyze()  # then the table grows 200-fold: the planner now believes a scan is cheaper
    make_counters(20_000)

    out = dry_run("--filter", "name=c55", "--batch-size", "2000")

    assert re.search(rf'Seq Scan on "?{TABLE}"?', out), out
    (warning,) = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warning.startswith(
        f"warning: The first chunk's plan reads all of {TABLE} (Seq Scan): every chunk may "
        "read the whole table, ~"
    )
    assert warning.endswith("Check that the primary key index is used, or ANALYZE the table.")


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_dry_run_does_not_warn_for_a_table_that_fits_in_one_chunk() -> None:
    make_counters(50)
    analyze()

    out = dry_run("--batch-size", "2000")

    assert re.search(rf'Seq Scan on "?{TABLE}"?', out), out
    assert "warning:" not in out


# -- replicas that cannot be asked ---------------------------------------------------------------


@pytest.fixture
def replica_down(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    """A replica alias whose server does not answer.

    Django's test cases refuse aliases added after they start, so this test runs outside one
    (unblocked by hand) and cleans up the rows it made itself.
    """
    from backfill.models import Run
    from scripts.pgcluster import free_port
    from tests.test_replica import add_alias, drop_alias

    add_alias("replica_down", f"postgres://postgres:s3cret@127.0.0.1:{free_port()}/postgres")
    with django_db_blocker.unblock():
        try:
            yield "replica_down"
        finally:
            drop_alias("replica_down")
            Counter.objects.all().delete()
            Run.objects.all().delete()


def test_an_unreachable_replica_holds_the_run_and_max_runtime_still_stops_it(
    replica_down: str, settings: Any
) -> None:
    settings.BACKFILL = {"REPLICA_ALIASES": [replica_down]}
    make_counters(10)
    clock, recorder = FakeClock(), Recorder()
    with (
        CaptureQueriesContext(connection) as queries,
        pytest.raises(backfill.Interrupted) as excinfo,
    ):
        run_kind(
            "update",
            batch_size=5,
            max_replica_lag=1,
            max_runtime=30,
            clock=clock,
            reporter=recorder,
        )

    waits = recorder.of(events.Waiting)
    assert [w.seconds for w in waits] == [5.0] * 6
    assert all(re.fullmatch(r"cannot read replica lag \(.+\); waiting", w.reason) for w in waits)
    assert "Connection refused" in waits[0].reason
    assert "s3cret" not in waits[0].reason
    assert str(excinfo.value).startswith("Stopped by --max-runtime 30s after 0 chunk(s)")
    assert set(Counter.objects.values_list("hits", flat=True)) == {0}
    # Held for 30 s: the lease was renewed every 5 s, so no other process takes the run over.
    heartbeats = [
        q for q in queries if q["sql"].replace("`", '"').startswith('UPDATE "backfill_worker"')
    ]
    assert len(heartbeats) == 5


# -- what SQLite says -----------------------------------------------------------------------------


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_sqlite_says_which_postgresql_safety_options_it_cannot_honour() -> None:
    make_counters(5)
    out, err = StringIO(), StringIO()

    call_command(
        "backfill_update",
        TABLE_LABEL,
        "--set",
        "hits=1",
        "--max-replica-lag",
        "2",
        "--vacuum-every",
        "0.5",
        "--progress",
        "log",
        "--verbosity",
        "2",
        stdout=out,
        stderr=err,
    )

    assert (
        "--max-replica-lag is not checked on sqlite: it reads PostgreSQL's pg_stat_replication "
        "(or the replicas in BACKFILL['REPLICA_ALIASES']).\n" in err.getvalue()
    )
    assert "--vacuum-every is not run on sqlite: it VACUUMs PostgreSQL tables.\n" in err.getvalue()
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}
