"""What differs between database backends: timeouts, estimates, errors worth retrying."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

from backfill import mysql

TRANSIENT_SQLSTATES = {
    "55P03": "lock timeout",
    "40P01": "deadlock",
    "40001": "serialization failure",
    "57014": "statement timeout",
    "57P01": "server shutting down (admin shutdown / terminated)",
    "57P02": "server crash shutdown",
    "57P03": "server not accepting connections yet",
    "53300": "too many connections",
}
SHRINK_REASONS = {"lock timeout", "deadlock", "statement timeout"}


def check_alias(using: str) -> None:
    """Raise BadInput unless ``using`` is an alias of ``settings.DATABASES``."""
    from backfill.exceptions import BadInput

    if using not in connections.settings:
        raise BadInput(
            f"Unknown database alias {using!r}: not in settings.DATABASES. "
            f"Use one of: {', '.join(sorted(connections.settings))}."
        )


def is_postgres(connection: BaseDatabaseWrapper) -> bool:
    return connection.vendor == "postgresql"


def describe(alias: str) -> str:
    """``default (postgresql 127.0.0.1:5432/app)``: never the password."""
    settings = connections[alias].settings_dict
    engine = connections[alias].vendor
    if engine == "sqlite":
        return f"{alias} (sqlite {settings.get('NAME')})"
    host = settings.get("HOST") or "localhost"
    port = settings.get("PORT") or "default port"
    return f"{alias} ({engine} {host}:{port}/{settings.get('NAME')})"


def set_local_timeouts(
    connection: BaseDatabaseWrapper, lock_timeout: float | None, statement_timeout: float | None
) -> None:
    """Bound this transaction's waits: ``set_config(..., true)`` is a parametrised ``SET LOCAL``."""
    if not is_postgres(connection):
        return
    settings = []
    # At least 1 ms: a fraction that rounds to 0 ms would switch the timeout off.
    if lock_timeout:
        settings.append(("lock_timeout", f"{max(1, round(lock_timeout * 1000))}ms"))
    if statement_timeout:
        settings.append(("statement_timeout", f"{max(1, round(statement_timeout * 1000))}ms"))
    if not settings:
        return
    sql = "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in settings)
    params = [p for pair in settings for p in pair]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def chunk_session(
    connection: BaseDatabaseWrapper, lock_timeout: float | None, statement_timeout: float | None
) -> AbstractContextManager[None]:
    """Around a chunk's transaction: session settings that must not outlive it (MySQL, which
    has no ``SET LOCAL``). PostgreSQL sets its own inside the transaction
    (``set_local_timeouts``); SQLite has none.
    """
    if mysql.is_mysql(connection):
        return mysql.chunk_session(connection, lock_timeout, statement_timeout)
    return nullcontext()


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth a retry (lock timeout, lost connection…), or None when it is not."""
    from django.db import InterfaceError, OperationalError

    reason = mysql.transient_reason(exc)
    if reason is not None:
        return reason
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate in TRANSIENT_SQLSTATES:
        return TRANSIENT_SQLSTATES[sqlstate]
    if sqlstate and sqlstate.startswith("08"):
        return "connection failure"
    if isinstance(exc, InterfaceError):
        return "connection closed"
    if isinstance(exc, OperationalError):
        text = str(exc).lower()
        if "database is locked" in text or "database table is locked" in text:
            return "database is locked"
        if sqlstate is None and type(cause).__module__.startswith("psycopg"):
            # psycopg raises OperationalError without a state when the socket breaks. SQLite's
            # errors never carry a state: a syntax error there is not worth a retry.
            return "connection lost"
    return None


TABLE_SIZE_SQL = (
    "SELECT c.reltuples, c.relpages, c.relkind, "
    "pg_relation_size(c.oid) / current_setting('block_size')::int "
    "FROM pg_class c WHERE c.oid = to_regclass(%s)"
)


def table_rows(connection: BaseDatabaseWrapper, model: type[models.Model], *, exact: bool) -> int:
    """Rows in the model's table: an estimate on PostgreSQL and MySQL unless exact is asked.

    The estimate is ``pg_class.reltuples`` scaled to the table's current size, as the planner
    does, so a table that grew since its last ANALYZE is not under-counted; a table never
    analysed asks the planner. Neither reads the table.
    """
    if mysql.is_mysql(connection) and not exact:
        return mysql.table_rows(connection, model._meta.db_table)
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        if is_postgres(connection) and not exact:
            cursor.execute(TABLE_SIZE_SQL, [table])
            row = cursor.fetchone()
            pages = None
            if row is not None and row[2] in ("r", "m"):
                reltuples, relpages, _kind, pages = row
                if reltuples >= 0 and relpages > 0:
                    return round(float(reltuples) / int(relpages) * int(pages))
                if pages == 0:
                    return 0
            # Never analysed (or partitioned): ask the planner (still no scan).
            cursor.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table}")
            plan: Any = cursor.fetchone()[0]
            if isinstance(plan, str):
                plan = json.loads(plan)
            rows = int(plan[0]["Plan"]["Plan Rows"])
            if pages is not None and pages < 10:
                # The planner assumes at least 10 pages for a table never analysed; scale its
                # rows-per-page guess to the pages there are.
                rows = round(rows * int(pages) / 10)
            return rows
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        return int(cursor.fetchone()[0])


def explain(
    connection: BaseDatabaseWrapper, sql: str, params: Any, tables: set[str]
) -> tuple[list[str], list[str]]:
    """A query's plan as lines, and which of ``tables`` it reads whole (MySQL; PostgreSQL's
    own EXPLAIN is read by the runner).
    """
    return mysql.explain(connection, sql, params, tables)


def query_param_limit(connection: BaseDatabaseWrapper) -> int:
    """How many ``?`` parameters a statement may carry (SQLite); PostgreSQL arrays need 1/column."""
    if connection.vendor == "sqlite":
        import sqlite3

        connection.ensure_connection()
        raw = connection.connection
        if raw is not None and hasattr(raw, "getlimit"):
            return int(raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    limit = connection.features.max_query_params
    return int(limit) if limit else 65_535


# A replica that replayed everything flushed has no lag, whatever replay_lag still shows: the
# primary keeps showing the last measured lag until two idle status replies later.
PRIMARY_LAG_SQL = (
    "SELECT application_name, CASE WHEN replay_lsn >= pg_current_wal_flush_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM replay_lag), 0) END FROM pg_stat_replication"
)
REPLICA_LAG_SQL = (
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)


def replica_lag(using: str, replica_aliases: list[str]) -> tuple[float, str] | None:
    """The worst replica lag in seconds and which replica it is, or None when there is none.

    With replica aliases configured each replica is asked directly (``now()`` minus the last
    replayed transaction's time; ``SHOW REPLICA STATUS`` on MySQL); otherwise the primary's
    ``pg_stat_replication.replay_lag`` is used, which keeps growing while a replica's replay
    is stuck.
    """
    worst: tuple[float, str] | None = None
    if replica_aliases:
        for alias in replica_aliases:
            if mysql.is_mysql(connections[alias]):
                lag = mysql.replica_lag(alias)
            else:
                with connections[alias].cursor() as cursor:
                    cursor.execute(REPLICA_LAG_SQL)
                    lag = float(cursor.fetchone()[0])
            if worst is None or lag > worst[0]:
                worst = (lag, describe(alias))
        return worst
    connection = connections[using]
    if not is_postgres(connection):
        return None
    with connection.cursor() as cursor:
        cursor.execute(PRIMARY_LAG_SQL)
        for name, lag in cursor.fetchall():
            if worst is None or float(lag) > worst[0]:
                worst = (float(lag), f"replica {name or '(unnamed)'}")
    return worst
