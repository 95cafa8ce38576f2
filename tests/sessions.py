"""Another session on the test database, outside Django, on PostgreSQL or MySQL/MariaDB: an
application's connection that writes while a backfill works, and an observer that sees who
waits for a lock."""

from __future__ import annotations

import time
from typing import Any

from django.db import connection

from tests.conftest import database_url

WAIT_LIMIT = 10.0  # seconds to wait for a condition before the test fails


def connect() -> Any:
    """A second connection to the test database (psycopg or MySQLdb), in autocommit."""
    if connection.vendor == "mysql":
        import MySQLdb

        settings = connection.settings_dict
        return MySQLdb.connect(
            host=settings["HOST"] or "127.0.0.1",
            port=int(settings["PORT"] or 3306),
            user=settings["USER"],
            password=settings["PASSWORD"] or "",
            database=settings["NAME"],
            autocommit=True,
        )
    import psycopg

    return psycopg.connect(database_url(), autocommit=True)


def execute(conn: Any, sql: str, params: list[Any]) -> None:
    """Run one statement on a connection from ``connect()``."""
    if connection.vendor == "mysql":
        conn.cursor().execute(sql, params)
    else:
        conn.execute(sql, params)


def session_id(conn: Any) -> int:
    """The server's id of a connection from ``connect()``: backend pid, or thread id."""
    if connection.vendor == "mysql":
        return int(conn.thread_id())
    return int(conn.info.backend_pid)


def waits_for_a_lock(observer: Any, session: int) -> bool:
    """Wait until ``session`` is stuck waiting for a row lock; False after the limit."""
    if connection.vendor == "mysql":
        return _mysql_waits(observer, session)
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline:
        row = observer.execute("SELECT cardinality(pg_blocking_pids(%s)) > 0", [session])
        if row.fetchone()[0]:
            return True
        time.sleep(0.005)
    return False


def _mysql_waits(observer: Any, thread: int) -> bool:
    """In ``INNODB_TRX`` as ``LOCK WAIT``, or still running its UPDATE in the process list a
    second later."""
    deadline = time.monotonic() + WAIT_LIMIT
    cursor = observer.cursor()
    running_since = None
    while time.monotonic() < deadline:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX "
            "WHERE trx_mysql_thread_id = %s AND trx_state = 'LOCK WAIT'",
            [thread],
        )
        if cursor.fetchone()[0]:
            return True
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE ID = %s AND INFO LIKE 'UPDATE%%'",
            [thread],
        )
        if cursor.fetchone()[0]:
            running_since = running_since or time.monotonic()
            if time.monotonic() - running_since > 1.0:
                return True
        time.sleep(0.005)
    return False
