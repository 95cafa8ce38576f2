"""Planning the next chunk on a second connection while this one is worked (backfill.plan_ahead).

On PostgreSQL and MySQL/MariaDB. The witness is the main connection's statements: a chunk
planned ahead is not planned again in its own transaction.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

import backfill
from backfill.chunks import KeyPlanner, PlannedChunk
from backfill.plan_ahead import PlanAhead
from tests import sessions
from tests.run_support import (
    assert_chunks_tile,
    assert_every_row_once,
    assert_ledger_matches_data,
    make_counters,
    make_many_counters,
    wait_for,
)
from tests.support import committing
from tests.testapp.models import Counter

pytestmark = [
    pytest.mark.skipif(
        connection.vendor == "sqlite", reason="SQLite plans in-process: no second connection"
    ),
    committing,
]


def plans_on_the_main_connection(queries: CaptureQueriesContext) -> int:
    """Chunk plans among the statements: the walk of the next keys (KeyPlanner.next_chunk)."""
    return sum(1 for q in queries if "chunk_keys" in q["sql"])


def sessions_on_the_database() -> set[int]:
    """The server's ids of the client sessions on the test database."""
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE()")
        else:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend'"
            )
        return {int(row[0]) for row in cursor.fetchall()}


def bump(obj: Counter) -> None:
    obj.hits += 1


@pytest.mark.parametrize("kind", ["update", "iterate"])
def test_each_chunk_after_the_first_was_planned_ahead(kind: str) -> None:
    make_counters(95)

    with CaptureQueriesContext(connection) as queries:
        if kind == "update":
            result = backfill.update(
                Counter.objects.all(), set={"hits": F("hits") + 1}, batch_size=10
            )
        else:
            result = backfill.iterate(Counter.objects.all(), transform=bump, batch_size=10)

    # Ten chunks: the first planned in its transaction, the other nine ahead; the last claim
    # finds the end of the table in its own transaction.
    assert plans_on_the_main_connection(queries) == 2
    assert (result.status, result.rows_scanned, result.rows_changed) == ("completed", 95, 95)
    assert_every_row_once()
    assert_chunks_tile()
    assert_ledger_matches_data()


def test_plan_ahead_false_plans_every_chunk_in_its_transaction(settings: Any) -> None:
    settings.BACKFILL = {"PLAN_AHEAD": False}
    make_counters(95)

    with CaptureQueriesContext(connection) as queries:
        result = backfill.iterate(Counter.objects.all(), transform=bump, batch_size=10)

    assert plans_on_the_main_connection(queries) == 11
    assert result.rows_changed == 95
    assert_chunks_tile()


def test_the_second_connection_lives_as_long_as_the_run() -> None:
    pks = make_counters(40)
    before = sessions_on_the_database()
    during: list[set[int]] = []

    def look(obj: Counter) -> None:
        if obj.pk == pks[10]:  # chunk 2, whose plan the helper made: its connection is open
            during.append(sessions_on_the_database())
        obj.hits += 1

    backfill.iterate(Counter.objects.all(), transform=look, batch_size=10)

    (new,) = during[0] - before  # one more session while the run works: the helper's
    # The server lists a closed session until its backend has exited: a moment.
    wait_for(lambda: new not in sessions_on_the_database(), "the helper's session to end", 10)


def test_rows_inserted_and_deleted_after_a_plan_are_written_exactly_once() -> None:
    pks = make_counters(40)
    # Gaps to insert into: every other row of the second half.
    Counter.objects.filter(pk__in=pks[20::2]).delete()
    writer = sessions.connect()
    table = connection.ops.quote_name(Counter._meta.db_table)
    changed: list[int] = []

    def meanwhile(obj: Counter) -> None:
        if obj.pk == pks[9]:
            # While chunk 1 (rows 0-9) is worked and chunk 2 already planned, an application
            # inserts rows into the gaps of chunks 2 and 3 and deletes one row of chunk 2.
            for pk in pks[20:30:2]:
                sessions.execute(
                    writer, f"INSERT INTO {table} (id, name, hits) VALUES (%s, 'new', 0)", [pk]
                )
            sessions.execute(writer, f"DELETE FROM {table} WHERE id = %s", [pks[11]])
        changed.append(obj.pk)
        obj.hits += 1

    try:
        result = backfill.iterate(Counter.objects.all(), transform=meanwhile, batch_size=10)
    finally:
        writer.close()

    assert result.status == "completed"
    assert pks[11] not in Counter.objects.values_list("pk", flat=True)
    assert set(pks[20:30:2]) <= set(changed)
    assert sorted(changed) == sorted(set(changed))
    assert_every_row_once()
    assert_chunks_tile()


def other_session(*, besides: set[int]) -> int:
    """The id of the one session on the test database that is not one of ``besides``."""
    (found,) = sessions_on_the_database() - besides
    return found


def main_session() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CONNECTION_ID()" if connection.vendor == "mysql" else "SELECT pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_a_plan_ahead_that_failed_gives_way_to_planning_in_the_transaction() -> None:
    pks = make_counters(50)
    end = pks[-1]
    planner = KeyPlanner(Counter, connection)
    ahead = PlanAhead(planner, lock_timeout=5, statement_timeout=60)
    killer = sessions.connect()

    def plan(lo: Any) -> PlannedChunk:
        chunk = ahead.next_chunk(lo, end, 10)
        assert chunk is not None
        return chunk

    try:
        first = plan(None)
        assert ahead.ahead is not None
        second_ahead = ahead.ahead.result.result()  # planned on the helper's connection
        side = other_session(besides={main_session(), sessions.session_id(killer)})
        kill = "KILL %s" if connection.vendor == "mysql" else "SELECT pg_terminate_backend(%s)"
        sessions.execute(killer, kill, [side])

        second = plan(first.hi)  # the plan made before the kill
        third = plan(second.hi)  # its plan ahead met the dead connection
        fourth = plan(third.hi)  # planned ahead on a new connection
    finally:
        ahead.close()
        killer.close()

    assert second == second_ahead
    assert [c.hi for c in (first, second, third, fourth)] == [pks[9], pks[19], pks[29], pks[39]]
    assert ahead.used == 2  # the second and the fourth


def test_a_run_stops_planning_ahead_after_failures_in_a_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_many_counters(250_000)
    end = Counter.objects.order_by("-pk").values_list("pk", flat=True)[0]
    planner = KeyPlanner(Counter, connection)
    # The helper plans under the chunk's timeouts: 1 ms is too short to walk 50,000 keys,
    # while this test's own connection, planning inline, has no timeout.
    ahead = PlanAhead(planner, lock_timeout=5, statement_timeout=0.001)
    chunks: list[PlannedChunk] = []
    try:
        with caplog.at_level("WARNING", logger="backfill"):
            while chunk := ahead.next_chunk(chunks[-1].hi if chunks else None, end, 50_000):
                chunks.append(chunk)
    finally:
        ahead.close()

    assert [c.keys for c in chunks] == [50_000] * 5
    assert (ahead.used, ahead.failures) == (0, 3)
    # Chunks 2 to 4 waited for a plan that failed; chunk 5 was not planned ahead at all.
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("Planning ahead failed 3 times in a row (last: ")
    assert warning.endswith("this run plans each chunk in its transaction from now on.")
