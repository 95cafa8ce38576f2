"""A dropped connection or restarted server mid-run: retried with backoff, reconnected, continued.

The session is dropped for real with ``pg_terminate_backend`` from a second connection (what
clients see when PostgreSQL restarts: 57P01, then a closed connection). After the retry budget
(``BACKFILL["RETRIES"]``) the run fails with exit 1 and resumes later.
"""

from __future__ import annotations

import re
import sqlite3

import psycopg
import pytest
from django.db import IntegrityError, OperationalError, ProgrammingError, connection
from django.db.backends.postgresql.base import DatabaseWrapper
from django.test.utils import override_settings

import backfill
from backfill import events
from backfill.database import transient_reason
from backfill.models import Run
from tests.conftest import SpawnManage
from tests.run_support import (
    FAST,
    FakeClock,
    assert_chunks_tile,
    assert_every_row_once,
    assert_ledger_matches_data,
    call,
    chunks_done_at_least,
    finish,
    make_counters,
    the_run,
    wait_for,
)
from tests.support import postgres_only, sqlite_only
from tests.testapp.models import Counter
from tests.transforms import other_connection, terminate_my_session

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid() -> int:
    connection.ensure_connection()
    assert connection.connection is not None
    return int(connection.connection.info.backend_pid)


# -- what counts as transient ----------------------------------------------------------------


@postgres_only
def test_a_terminated_session_is_transient_then_a_closed_connection() -> None:
    pid = backend_pid()
    with other_connection() as other:
        other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])

    with pytest.raises(OperationalError) as terminated:
        connection.cursor().execute("SELECT 1")
    with pytest.raises(OperationalError) as closed:
        connection.cursor().execute("SELECT 1")

    assert isinstance(terminated.value.__cause__, psycopg.errors.AdminShutdown)
    assert terminated.value.__cause__.sqlstate == "57P01"
    assert (
        transient_reason(terminated.value) == "server shutting down (admin shutdown / terminated)"
    )
    assert str(closed.value) == "the connection is closed"
    assert transient_reason(closed.value) == "connection lost"
    assert not connection.is_usable()
    connection.close()


@postgres_only
def test_a_refused_connection_is_transient() -> None:
    refused = DatabaseWrapper({**connection.settings_dict, "PORT": "1"}, alias="refused")

    with pytest.raises(OperationalError) as error:
        refused.ensure_connection()

    assert "Connection refused" in str(error.value)
    assert transient_reason(error.value) == "connection lost"


def test_constraint_and_syntax_errors_are_not_transient() -> None:
    counter = Counter.objects.create(name="a")
    with pytest.raises(IntegrityError) as duplicate:
        Counter.objects.create(pk=counter.pk, name="b")
    with pytest.raises((ProgrammingError, OperationalError)) as syntax:
        connection.cursor().execute("SELEKT 1")

    assert transient_reason(duplicate.value) is None
    assert transient_reason(syntax.value) is None


@sqlite_only
def test_a_locked_sqlite_database_is_transient() -> None:
    Counter.objects.create(name="a")
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 0")
    try:
        with pytest.raises(OperationalError) as locked:
            Counter.objects.update(hits=1)
    finally:
        holder.rollback()
        holder.close()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 5000")

    assert transient_reason(locked.value) == "database is locked"


# -- the runner reconnects -------------------------------------------------------------------


@postgres_only
def test_a_dropped_session_mid_chunk_is_retried_on_a_new_connection() -> None:
    pks = make_counters(300)
    drops = {pks[60]: 2, pks[250]: 1}  # chunk 2 is dropped twice, chunk 6 once
    sessions: list[int] = []

    def transform(obj: Counter) -> None:
        if drops.get(obj.pk):
            drops[obj.pk] -= 1
            sessions.append(backend_pid())
            terminate_my_session()
        obj.hits += 1

    seen: list[events.Event] = []
    result = backfill.iterate(
        Counter.objects.all(), transform=transform, batch_size=50, reporter=seen.append,
        clock=FakeClock(0.0),
    )  # fmt: skip

    assert result.status == "completed"
    assert (result.rows_scanned, result.chunks) == (300, 6)
    retries = [e for e in seen if isinstance(e, events.Retrying)]
    assert [(e.reason, e.attempt, e.delay) for e in retries] == [
        ("server shutting down (admin shutdown / terminated)", 1, 0.5),
        ("server shutting down (admin shutdown / terminated)", 2, 1.0),
        ("server shutting down (admin shutdown / terminated)", 1, 0.5),
    ]
    assert retries[0].error == (
        "OperationalError: terminating connection due to administrator command"
    )
    assert len(set(sessions)) == 3  # each retry ran on a new connection
    assert backend_pid() not in sessions
    assert_every_row_once()
    assert_chunks_tile()


@postgres_only
def test_after_the_retry_budget_the_run_fails_with_exit_1_and_resumes_later() -> None:
    pks = make_counters(200)
    Counter.objects.filter(pk=pks[120]).update(name="drop")
    command = (
        "backfill_iterate", "testapp.Counter", "--transform",
        "tests.transforms.count_hit_or_drop_connection", "--batch-size", "50",
    )  # fmt: skip

    with override_settings(BACKFILL={"RETRIES": 2, "RETRY_BACKOFF": 0.01}):
        code, _, message = call(*command)

    assert code == 1
    assert message == (
        f"Chunk after pk {pks[99]} failed (server shutting down (admin shutdown / terminated)) "
        "after 3 attempt(s): OperationalError: terminating connection due to administrator "
        "command. Earlier chunks are committed; re-run the same command to resume."
    )
    run = the_run()
    assert run.status == Run.Status.FAILED
    assert run.last_error == message
    assert run.frontier == str(pks[99])
    assert_ledger_matches_data(run)

    Counter.objects.filter(pk=pks[120]).update(name="fixed")
    code, out, _ = call(*command)

    assert code == 0, out
    assert_every_row_once()
    assert_chunks_tile()


@postgres_only
def test_a_session_dropped_between_chunks_reconnects_and_continues(
    spawn_manage: SpawnManage,
) -> None:
    make_counters(300)
    name = "backfill-reconnect-test"
    process = spawn_manage(
        "backfill_iterate", "testapp.Counter", "--transform", FAST, "--batch-size", "50",
        "--sleep", "0.3", "--progress", "log", env={"PGAPPNAME": name},
    )  # fmt: skip
    wait_for(chunks_done_at_least(1), "the first chunk")

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE application_name = %s",
            [name],
        )
        # The run's own session, and the one that plans its next chunks ahead (same name).
        terminated = [row[0] for row in cursor.fetchall()]
        assert terminated and all(terminated)
    code, _, err = finish(process)

    assert code == 0, err
    assert re.search(
        r"^retrying in 0\.5 s \((server shutting down \(admin shutdown / terminated\)|connection "
        r"lost), attempt 1/5, batch size 50\): OperationalError: ",
        err,
        re.M,
    ), err
    assert_every_row_once()
    assert the_run().status == Run.Status.COMPLETED
