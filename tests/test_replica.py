"""--max-replica-lag against a real streaming replica.

The harness starts a throwaway primary and, from ``pg_basebackup -R``, a hot standby of it
(scripts/pgcluster.py), adds both to Django as database aliases, pauses the standby's replay
(``pg_wal_replay_pause()``) so the backfill's own writes make it lag, and resumes the replay
when the run reports that it is waiting. The run must say why it waits, then finish.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import F

import backfill
from backfill import events
from backfill.models import Chunk, Run, Worker
from backfill.progress import LogReporter
from scripts import pgcluster
from tests.testapp.models import Counter

PRIMARY, STANDBY = "replica_test_primary", "replica_test_standby"
ROWS, BATCH = 150, 10
LIMIT = 0.3  # --max-replica-lag, seconds
WAIT_LIMIT = 20.0


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[pgcluster.Cluster, pgcluster.Cluster]]:
    try:
        pgcluster.find_bindir()
    except pgcluster.ClusterError as error:
        pytest.skip(f"needs the PostgreSQL server binaries to start a replica: {error}")
    primary = pgcluster.Cluster(settings={"wal_level": "replica", "max_wal_senders": 5})
    standby: pgcluster.Cluster | None = None
    try:
        primary.init().start()
        # Status replies every second: the primary learns of replay progress quickly.
        standby = pgcluster.Cluster(
            settings={"hot_standby": True, "wal_receiver_status_interval": 1}
        )
        standby.basebackup_from(primary).start()
        yield primary, standby
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def add_alias(alias: str, url: str) -> None:
    """Make ``url`` a Django database alias for this test (tests/settings.py has one)."""
    import environ

    config = environ.Env.db_url_config(url)
    configured = connections.configure_settings(
        {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], alias: config}
    )
    connections.settings[alias] = configured[alias]


def drop_alias(alias: str) -> None:
    if alias in connections.settings:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]


@pytest.fixture
def aliases(
    clusters: tuple[pgcluster.Cluster, pgcluster.Cluster], django_db_blocker: Any
) -> Iterator[tuple[Any, Any]]:
    """The primary and the standby as Django aliases, with the tables a run needs on the
    primary, and a psycopg connection to each cluster for the test to steer replication."""
    import psycopg

    primary, standby = clusters
    add_alias(PRIMARY, primary.url())
    add_alias(STANDBY, standby.url())
    with django_db_blocker.unblock():
        try:
            with connections[PRIMARY].schema_editor() as editor:
                for model in (Run, Chunk, Worker, Counter):
                    editor.create_model(model)
            Counter.objects.using(PRIMARY).bulk_create([Counter(name=f"c{i}") for i in range(ROWS)])
            with (
                psycopg.connect(primary.url(), autocommit=True) as to_primary,
                psycopg.connect(standby.url(), autocommit=True) as to_standby,
            ):
                yield to_primary, to_standby
                to_standby.execute("SELECT pg_wal_replay_resume()")
        finally:
            with connections[PRIMARY].schema_editor() as editor:
                for model in (Counter, Worker, Chunk, Run):
                    editor.delete_model(model)
            drop_alias(PRIMARY)
            drop_alias(STANDBY)


def _pause_replay(to_primary: Any, to_standby: Any) -> None:
    """Let the standby replay the setup, then stop its replay."""
    (flushed,) = to_primary.execute("SELECT pg_current_wal_flush_lsn()").fetchone()
    deadline = time.monotonic() + WAIT_LIMIT
    while not to_standby.execute(
        "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [flushed]
    ).fetchone()[0]:
        assert time.monotonic() < deadline, "the standby never caught up with the setup"
        time.sleep(0.01)
    to_standby.execute("SELECT pg_wal_replay_pause()")
    while to_standby.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] != "paused":
        assert time.monotonic() < deadline, "the standby's replay never paused"
        time.sleep(0.01)


def _run_until_lag_then_resume(to_standby: Any) -> tuple[backfill.Result, list[Any], str]:
    """Run the backfill on the primary; resume the replay when the run first waits for it."""
    seen: list[Any] = []
    out = StringIO()
    log = LogReporter(out, verbosity=2)

    def report(event: events.Event) -> None:
        seen.append(event)
        log(event)
        if isinstance(event, events.Waiting) and len(seen_waiting(seen)) == 1:
            to_standby.execute("SELECT pg_wal_replay_resume()")

    result = backfill.update(
        Counter.objects.using(PRIMARY).all(),
        set={"hits": F("hits") + 1},
        batch_size=BATCH,
        sleep=0.2,  # real time between chunks, so an unreplayed chunk grows old
        max_replica_lag=LIMIT,
        max_runtime=60,  # a run that never resumed fails the test instead of hanging it
        reporter=report,
    )
    return result, seen, out.getvalue()


def seen_waiting(seen: list[Any]) -> list[events.Waiting]:
    return [e for e in seen if isinstance(e, events.Waiting)]


def _assert_paused_then_finished(
    result: backfill.Result, seen: list[Any], output: str, where: str
) -> None:
    waits = seen_waiting(seen)
    assert waits, output
    reason = re.compile(rf"{where} lags \d+\.\d\d s > --max-replica-lag {LIMIT:g} s; pausing")
    assert all(reason.fullmatch(w.reason) for w in waits), waits
    # Rendered for the operator, and the resume said so too.
    assert re.search(rf"^waiting \d+\.\d s: {reason.pattern}$", output, re.MULTILINE), output
    assert re.search(
        rf"^Replica lag is back under {LIMIT:g} s \(\d+\.\d\d s\); resuming\.$",
        output,
        re.MULTILINE,
    ), output
    # It waited between chunks, and went on after the replica caught up.
    first_wait = seen.index(waits[0])
    assert any(isinstance(e, events.ChunkDone) for e in seen[:first_wait])
    assert any(isinstance(e, events.ChunkDone) for e in seen[first_wait:])
    assert result.status == "completed"
    assert result.rows_changed == ROWS
    assert set(Counter.objects.using(PRIMARY).values_list("hits", flat=True)) == {1}


def test_pauses_while_pg_stat_replication_shows_lag(aliases: tuple[Any, Any]) -> None:
    to_primary, to_standby = aliases
    _pause_replay(to_primary, to_standby)

    result, seen, output = _run_until_lag_then_resume(to_standby)

    _assert_paused_then_finished(result, seen, output, where="replica walreceiver")


def test_pauses_while_a_replica_alias_lags(aliases: tuple[Any, Any], settings: Any) -> None:
    settings.BACKFILL = {"REPLICA_ALIASES": [STANDBY]}
    to_primary, to_standby = aliases
    _pause_replay(to_primary, to_standby)

    result, seen, output = _run_until_lag_then_resume(to_standby)

    port = connections[STANDBY].settings_dict["PORT"]
    where = re.escape(f"{STANDBY} (postgresql 127.0.0.1:{port}/postgres)")
    _assert_paused_then_finished(result, seen, output, where=where)
