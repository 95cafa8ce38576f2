"""MySQL and MariaDB: what the engine does differently there.

Everything here is reached through ``backfill.database`` (timeouts, errors, estimates, replica
lag, plans), ``backfill.bulk`` (the write) and ``backfill.reading`` (writes sent without
waiting); no other module asks for this backend by name.

- Per-chunk settings. MySQL has no ``SET LOCAL``: the lock waits (``innodb_lock_wait_timeout``,
  ``lock_wait_timeout``), the statement limit (``max_statement_time`` on MariaDB,
  ``max_execution_time`` for reads on MySQL) and strict SQL mode are set on the session before
  the chunk's transaction and restored right after it, so a pooled connection keeps nothing.
- The write. One ``UPDATE t JOIN JSON_TABLE(%s, …) v ON t.pk = v._k SET …`` per table and
  read batch (``t STRAIGHT_JOIN`` the JSON rows materialized, when its columns are short: see
  ``_update_join``): the changed rows travel as one JSON document, whatever their number, sent
  with ``send_query`` while the next batch is transformed (``statement``, ``send``, ``receive``).
  Measured on MariaDB 10.11 against a ``VALUES`` table and a ``UNION ALL`` derived table of
  the same rows (docs/mysql.md), it parses the fastest. Values are extracted as text and
  converted by the assignment itself, under strict mode, so a value the column cannot hold
  fails the chunk (error 1406, 1264, 1292, …) instead of being truncated by the JSON table.
  Rows that all take the same values (``--set``, a transform giving one status to a batch)
  skip the JSON table: ``UPDATE t SET … WHERE`` their key range ``AND (pk + 0) IN (…)``, which
  costs the server little more than a plain ``UPDATE`` of the range (``_update_shared``).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from django.db import DatabaseError, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

# Error codes worth a retry, as ``backfill.database.TRANSIENT_SQLSTATES`` for PostgreSQL.
TRANSIENT_ERRORS = {
    1205: "lock timeout",  # ER_LOCK_WAIT_TIMEOUT
    1213: "deadlock",  # ER_LOCK_DEADLOCK
    1969: "statement timeout",  # MariaDB ER_STATEMENT_TIMEOUT (max_statement_time)
    3024: "statement timeout",  # MySQL ER_QUERY_TIMEOUT (max_execution_time)
    1040: "too many connections",
    1053: "server shutting down",
    1927: "connection killed",  # MariaDB ER_CONNECTION_KILLED
    2002: "connection failure",
    2003: "connection failure",
    2006: "connection lost",  # CR_SERVER_GONE_ERROR
    2013: "connection lost",  # CR_SERVER_LOST
    4031: "connection lost",  # MySQL 8: disconnected by the server for inactivity
}

# Offered a statement and its parameters to send without waiting; False: run it now instead.
Send = Callable[[str, Sequence[Any]], bool]

# A JSON document above this size is split over several statements, far below the servers'
# default max_allowed_packet (16 MB on MariaDB, 64 MB on MySQL).
MAX_DOCUMENT_BYTES = 4_000_000

# The most keys the statement for rows that share their new values lists (``_update_shared``),
# about 200 kB of SQL; more rows than this (a chunk written after its last batch) go through
# the JSON table, whose document is split past MAX_DOCUMENT_BYTES.
MAX_SHARED_KEYS = 10_000


def is_mysql(connection: BaseDatabaseWrapper) -> bool:
    return connection.vendor == "mysql"


def sends_ahead(connection: BaseDatabaseWrapper) -> bool:
    """Whether a statement can be sent on this (open) connection without waiting for it:
    mysqlclient's usual cursors store a query's rows in memory as it runs, so the connection
    is free while they are handed out. A connection configured with an unbuffered cursor class
    (``SSCursor``) is not."""
    if not is_mysql(connection) or connection.connection is None:
        return False
    from MySQLdb.cursors import CursorStoreResultMixIn

    raw = connection.connection
    cursor_class = getattr(raw, "cursorclass", None)
    return (
        hasattr(raw, "send_query")
        and isinstance(cursor_class, type)
        and issubclass(cursor_class, CursorStoreResultMixIn)
    )


def statement(connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> bytes | None:
    """``sql`` with its ``params`` quoted as mysqlclient's ``execute`` quotes them, for
    ``send``; None when it cannot be built this way (a ``%`` that is not a placeholder) and
    must run as usual."""
    raw = connection.connection
    try:
        query: bytes = sql.encode(raw.encoding) % tuple(_literal(raw, p) for p in params)
        return query
    except (TypeError, ValueError):
        return None


def _literal(raw: Any, value: Any) -> bytes:
    """mysqlclient's ``literal(value)``. A list of ints (the keys of ``_update_shared``) is
    rendered in one ``str.join``, to the same bytes ``literal`` gives it (``(1,2,3)``: an int's
    literal is its ``str``) at a tenth of the time of quoting each int on its own."""
    if type(value) is list and set(map(type, value)) == {int}:
        return b"(" + ",".join(map(str, value)).encode() + b")"
    literal: bytes = raw.literal(value)
    return literal


def send(connection: BaseDatabaseWrapper, query: bytes) -> None:
    """Send a ``statement`` without waiting for its result: ``receive`` collects it."""
    with connection.wrap_database_errors:
        connection.connection.send_query(query)


def receive(connection: BaseDatabaseWrapper) -> None:
    """Wait for the result of the statement ``send`` sent; its error is Django's, as from a
    cursor (with the errors Django's MySQL cursor calls integrity errors as such)."""
    import MySQLdb
    from django.db.backends.mysql.base import CursorWrapper

    with connection.wrap_database_errors:
        try:
            connection.connection.read_query_result()
        except MySQLdb.OperationalError as exc:
            if exc.args and exc.args[0] in CursorWrapper.codes_for_integrityerror:
                raise MySQLdb.IntegrityError(*exc.args) from exc
            raise


def is_mariadb(connection: BaseDatabaseWrapper) -> bool:
    return bool(getattr(connection, "mysql_is_mariadb", False))


def error_code(exc: BaseException) -> int | None:
    """The server's (or client library's) error number of a MySQLdb error, if it is one."""
    cause = exc.__cause__ or exc
    if not type(cause).__module__.startswith("MySQLdb"):
        return None
    args = getattr(cause, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def transient_reason(exc: BaseException) -> str | None:
    code = error_code(exc)
    return None if code is None else TRANSIENT_ERRORS.get(code)


# -- per-chunk session settings -------------------------------------------------------------


def _session_settings(
    connection: BaseDatabaseWrapper, lock_timeout: float | None, statement_timeout: float | None
) -> list[tuple[str, str, list[Any]]]:
    """``(variable, value SQL, params)`` for the chunk. Lock waits take whole seconds (at least
    1); strict mode, and an error for a division by zero (``--set-expr``, as on PostgreSQL),
    are added to whatever mode the session has.
    """
    settings: list[tuple[str, str, list[Any]]] = [
        (
            "sql_mode",
            "CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), "
            "'STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO')",
            [],
        )
    ]
    if lock_timeout:
        seconds = max(1, math.ceil(lock_timeout))
        settings.append(("innodb_lock_wait_timeout", "%s", [seconds]))
        settings.append(("lock_wait_timeout", "%s", [seconds]))
    if statement_timeout:
        if is_mariadb(connection):
            settings.append(("max_statement_time", "%s", [float(statement_timeout)]))
        else:
            # MySQL bounds only SELECTs, in milliseconds.
            settings.append(("max_execution_time", "%s", [max(1, round(statement_timeout * 1000))]))
    return settings


@contextmanager
def chunk_session(
    connection: BaseDatabaseWrapper, lock_timeout: float | None, statement_timeout: float | None
) -> Iterator[None]:
    """Set the chunk's timeouts and strict mode on the session, and restore them after it.

    Enter it outside the chunk's transaction: the settings are saved to user variables and
    set in one statement before, and put back in one statement after, also when the chunk
    failed. When the connection is gone the restore is skipped (a new session starts clean).
    """
    settings = _session_settings(connection, lock_timeout, statement_timeout)
    qn = connection.ops.quote_name
    # MySQL applies a SET's assignments left to right: the saves read the values before.
    saves = [f"@{qn('backfill_' + name)} = @@SESSION.{name}" for name, _, _ in settings]
    sets = [f"SESSION {name} = {value}" for name, value, _ in settings]
    params = [p for _, _, values in settings for p in values]
    with connection.cursor() as cursor:
        cursor.execute("SET " + ", ".join([*saves, *sets]), params)
    try:
        yield
    finally:
        restores = [f"SESSION {name} = @{qn('backfill_' + name)}" for name, _, _ in settings]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET " + ", ".join(restores))
        except DatabaseError:
            if connection.is_usable():
                raise
            connection.close()


# -- estimates, replicas, plans -------------------------------------------------------------


def table_rows(connection: BaseDatabaseWrapper, table: str) -> int:
    """InnoDB's row estimate of ``table`` (``information_schema.TABLES.TABLE_ROWS``): no scan."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            [table],
        )
        row = cursor.fetchone()
    return int(row[0] or 0) if row else 0


def replica_status(mariadb: bool, version: tuple[int, ...]) -> str:
    """The statement that shows a replica's state: ``SHOW REPLICA STATUS`` (MariaDB 10.5.1+,
    MySQL 8.0.22+), or its older name on MySQL 8.0.19 to 8.0.21."""
    return "SHOW SLAVE STATUS" if not mariadb and version < (8, 0, 22) else "SHOW REPLICA STATUS"


def replica_lag(alias: str) -> float:
    """How far the replica at ``alias`` is behind, in seconds (0 when it is no replica).

    Raises DatabaseError when it is a replica whose replication is stopped (``NULL`` lag):
    the run holds, as it does for a replica it cannot read.
    """
    connection = connections[alias]
    with connection.cursor() as cursor:
        version = getattr(connection, "mysql_version", ())  # Django's MySQL backend has it
        statement = replica_status(is_mariadb(connection), version)
        cursor.execute(statement)
        names = [column[0] for column in cursor.description or ()]
        rows = cursor.fetchall()
    worst = 0.0
    for row in rows:
        status = dict(zip(names, row, strict=True))
        lag = status.get("Seconds_Behind_Master", status.get("Seconds_Behind_Source"))
        if lag is None:
            raise DatabaseError(
                f"replication on {alias!r} is not running ({statement}: "
                f"IO {status.get('Slave_IO_Running', status.get('Replica_IO_Running'))}, "
                f"SQL {status.get('Slave_SQL_Running', status.get('Replica_SQL_Running'))})"
            )
        worst = max(worst, float(lag))
    return worst


def explain(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any], tables: set[str]
) -> tuple[list[str], list[str]]:
    """The plan of a chunk's query, one line per table, and which of ``tables`` it reads
    whole (access type ``ALL``).
    """
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        names = [column[0] for column in cursor.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    lines = [
        f"{row.get('select_type')} {row.get('table')}: type={row.get('type')} "
        f"key={row.get('key')} rows={row.get('rows')} {row.get('Extra') or ''}".rstrip()
        for row in rows
    ]
    scanned = sorted({row["table"] for row in rows if row.get("type") == "ALL"} & tables)
    return lines, scanned


# -- the bulk write -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A prepared value as JSON carries it to the server: text, or None for NULL.

    Text for every type, so the column's own conversion (strict) applies, not JSON_TABLE's;
    bytes travel as base64 and are decoded in the statement.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a number MySQL can store")
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (decimal.Decimal, uuid.UUID, datetime.date, datetime.time)):
        return str(value)
    return str(value)


def _column(
    field: models.Field[Any, Any], values: list[Any], connection: BaseDatabaseWrapper
) -> list[Any]:
    """One column's values as the JSON document carries them. Ints and strings of the exact
    field classes that store them as they are (``backfill.bulk.PASS_THROUGH``) go as JSON
    numbers and strings, encoded by ``json.dumps`` in C with no Python call per value (the
    JSON table extracts them as text all the same); other values are prepared by the field
    and sent as text (``_plain``).
    """
    from backfill.bulk import PASS_THROUGH  # bulk imports this module

    kind = PASS_THROUGH.get(type(field))
    if kind is not None and set(map(type, values)) <= {kind, type(None)}:
        # JSON's true would be extracted as 'true', which no integer column takes.
        return [None if v is None else int(v) for v in values] if kind is bool else values
    prep = field.get_db_prep_save
    return [_plain(prep(value, connection)) for value in values]


def _is_binary(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> bool:
    return (field.db_type(connection) or "").lower() in ("longblob", "blob", "mediumblob") or (
        field.get_internal_type() == "BinaryField"
    )


def _key_type(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    key_type = str(field.rel_db_type(connection))  # the column type without AUTO_INCREMENT
    # MariaDB's native uuid cannot be a JSON_TABLE column's type.
    return "char(36)" if key_type == "uuid" else key_type


# Text long enough for any whole number an integer column holds ("-9223372036854775808" is 20
# characters); any 24 digits are beyond every integer column, so a cut value still fails.
_INTEGER_TEXT = 24
_INTEGER_TYPES = re.compile(r"^(tinyint|smallint|mediumint|int|integer|bigint)( unsigned)?$|^bool$")
_SHORT_TEXT = re.compile(r"^varchar\((\d+)\)$")
_SHORT_TEXT_LIMIT = 255
# MariaDB keeps a materialized derived table in memory up to the session's tmp_table_size and
# max_heap_table_size (16 MB each by default), storing each varchar at its full width (4 bytes
# a character in utf8mb4) and an index entry per row; past that it goes to disk, where the
# indexed join is slower than the plain one. Measured: 57,000 rows of (int, varchar(61)) stayed
# in 16 MB, 66,000 did not; the estimate below (254 + 32 bytes a row) allows 52,800.
_ROW_OVERHEAD = 32
_MEMORY_SHARE = 0.9


def _sized_type(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> str | None:
    """A short ``JSON_TABLE`` column type for ``field``'s values, or None (``longtext``).

    JSON_TABLE cuts a value longer than its column type (with a warning). A type one character
    longer than a ``varchar(n)`` column, or 24 characters for an integer column, keeps that
    safe: a value the column cannot hold is still one after the cut, so the assignment fails
    under strict mode instead of storing a shortened value. Text, JSON, decimals, dates and
    binary columns travel as ``longtext``.
    """
    db_type = (field.db_type(connection) or "").lower()
    if _INTEGER_TYPES.match(db_type):
        return f"varchar({_INTEGER_TEXT})"
    short = _SHORT_TEXT.match(db_type)
    if short and int(short.group(1)) < _SHORT_TEXT_LIMIT:
        return f"varchar({int(short.group(1)) + 1})"
    return None


def _row_bytes(types: Sequence[str]) -> int:
    """About what one materialized JSON row takes in memory: text columns at full width (4
    bytes a character), others 8 bytes."""
    total = 0
    for column_type in types:
        text = re.match(r"^(?:var)?char\((\d+)\)$", column_type)
        total += 4 * int(text.group(1)) + 2 if text else 8
    return total


def tmp_memory(connection: BaseDatabaseWrapper) -> float:
    """Bytes this session's in-memory temporary tables may take before going to disk."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT LEAST(@@SESSION.tmp_table_size, @@SESSION.max_heap_table_size)")
        (limit,) = cursor.fetchone()
    return _MEMORY_SHARE * int(limit)


def _update_join(target: str, columns: Sequence[str], in_memory: bool) -> str:
    """``UPDATE target JOIN`` the JSON rows ``v``, its ``ON`` clause to follow.

    ``in_memory``: the chunk's rows drive the join (a key range), each finding its new values
    through an index MariaDB builds on the materialized JSON rows, and are updated as they are
    met. Joined the other way, MariaDB writes every joined row to a temporary table and updates
    by position afterwards: about 1.6x the time (docs/mysql.md). Materialized rows too wide for
    memory go to disk, where that index loses: those keep the plain join.
    """
    rows_of = f"JSON_TABLE(%s, '$[*]' COLUMNS ({', '.join(columns)}))"
    if not in_memory:
        return f"UPDATE {target} JOIN {rows_of} v"
    # The hint keeps MySQL from merging the derived table back (for MariaDB, a comment).
    return f"UPDATE /*+ NO_MERGE(v) */ {target} STRAIGHT_JOIN (SELECT * FROM {rows_of} j) v"


def update_from_json(
    connection: BaseDatabaseWrapper,
    table: str,
    key_fields: Sequence[models.Field[Any, Any]],
    fields: Sequence[models.Field[Any, Any]],
    flagged: Sequence[bool],
    rows: Sequence[tuple[Any, dict[str, Any]]],
    bounds: tuple[str, list[Any]],
    *,
    memory: Callable[[], float],
    send: Send | None = None,
) -> int:
    """Write ``rows`` (``(pk, {attname: value})``, pk a tuple for a composite key) to
    ``table``; returns the statements run.

    ``flagged[i]`` says that not every row changed ``fields[i]``: a per-row flag then keeps
    the column's value in the rows that did not. ``memory`` gives the session's in-memory
    temporary table size (``tmp_memory``, kept by the caller between writes); ``send``, when
    given, is offered each statement first (the chunk reader's ``write_later``). Rows that all
    take the same values are written without the JSON table (``_update_shared``).
    """
    qn = connection.ops.quote_name
    target = qn(table)
    data = _carried(connection, key_fields, fields, flagged, rows)
    shared = _shared(data, key_fields, flagged, connection)
    if shared is not None:
        return _update_shared(
            connection, target, key_fields[0], fields, data[0], shared, bounds, send
        )
    columns = []
    joins = []
    types = [_key_type(key, connection) for key in key_fields]
    for j, key in enumerate(key_fields):
        name = qn(f"_k{j}")
        columns.append(f"{name} {types[j]} PATH '$[{j}]'")
        joins.append(f"{target}.{qn(str(key.column))} = v.{name}")
    assignments = []
    position = len(key_fields)
    sized = [_sized_type(field, connection) for field in fields]
    types += [t or "longtext" for t in sized] + ["int"] * sum(flagged)
    materialized = len(rows) * (_row_bytes(types) + _ROW_OVERHEAD)
    in_memory = all(sized) and materialized <= memory()
    for i, (field, flag) in enumerate(zip(fields, flagged, strict=True)):
        columns.append(f"{qn(f'_v{i}')} {sized[i] or 'longtext'} PATH '$[{position}]'")
        position += 1
        value = f"v.{qn(f'_v{i}')}"
        if _is_binary(field, connection):
            value = f"FROM_BASE64({value})"
        if flag:
            columns.append(f"{qn(f'_s{i}')} int PATH '$[{position}]'")
            position += 1
            current = f"{target}.{qn(str(field.column))}"
            value = f"IF(v.{qn(f'_s{i}')} = 1, {value}, {current})"
        assignments.append(f"{target}.{qn(str(field.column))} = {value}")
    where, bound_params = bounds
    sql = (
        f"{_update_join(target, columns, in_memory)} "
        f"ON {' AND '.join(joins)} SET {', '.join(assignments)} WHERE 1 = 1{where}"
    )
    return _execute(connection, sql, list(zip(*data, strict=True)), bound_params, send)


def _shared(
    data: list[list[Any]],
    key_fields: Sequence[models.Field[Any, Any]],
    flagged: Sequence[bool],
    connection: BaseDatabaseWrapper,
) -> list[Any] | None:
    """The values every row sets, when all rows set the same ones (``--set``, and the many
    transforms that give one status, flag or default to a whole batch); else None.

    Compared as they would travel, so rows share a value only if the server would receive the
    same text for each. Only for a one-column integer key whose values are Python ints (the
    key fields ``backfill.bulk.PASS_THROUGH`` names) and at most ``MAX_SHARED_KEYS`` rows.
    """
    if len(key_fields) != 1 or any(flagged) or not data[0] or len(data[0]) > MAX_SHARED_KEYS:
        return None
    # Whole numbers as Python ints (not the text other key fields travel as): "(pk + 0) IN"
    # compares numbers exactly only with numbers.
    if set(map(type, data[0])) != {int}:
        return None
    if not _INTEGER_TYPES.match(_key_type(key_fields[0], connection).lower()):
        return None
    values = data[1:]
    if not all(column.count(column[0]) == len(column) for column in values):
        return None
    return [column[0] for column in values]


def _update_shared(
    connection: BaseDatabaseWrapper,
    target: str,
    key_field: models.Field[Any, Any],
    fields: Sequence[models.Field[Any, Any]],
    keys: list[int],
    values: list[Any],
    bounds: tuple[str, list[Any]],
    send: Send | None,
) -> int:
    """``UPDATE t SET c = %s, … WHERE t.pk >= <first> AND t.pk <= <last> AND (t.pk + 0) IN
    (<keys>)``: rows that all take the same values need no JSON table.

    The key range drives: the server walks the batch's stretch of the primary key once, as a
    plain ``UPDATE`` of that range would, and writes the rows whose key is listed. The ``+ 0``
    keeps the list a filter; as an index condition it would make one B-tree descent per key,
    which measured nearly as slow as the JSON table and twice the filter (docs/mysql.md). The
    values are the text the JSON document would carry, converted by the assignment under strict
    mode in the same way.
    """
    qn = connection.ops.quote_name
    assignments = [
        f"{target}.{qn(str(field.column))} = "
        + ("FROM_BASE64(%s)" if _is_binary(field, connection) else "%s")
        for field in fields
    ]
    key = f"{target}.{qn(str(key_field.column))}"
    where, bound_params = bounds
    sql = (
        f"UPDATE {target} SET {', '.join(assignments)} WHERE {key} >= %s AND {key} <= %s "
        f"AND ({key} + 0) IN %s{where}"
    )
    # The keys as one list parameter: mysqlclient quotes it as "(k1,k2,…)".
    return _run(connection, sql, [*values, min(keys), max(keys), keys, *bound_params], send)


def _carried(
    connection: BaseDatabaseWrapper,
    key_fields: Sequence[models.Field[Any, Any]],
    fields: Sequence[models.Field[Any, Any]],
    flagged: Sequence[bool],
    rows: Sequence[tuple[Any, dict[str, Any]]],
) -> list[list[Any]]:
    """The rows' values as they travel, column by column: the key's parts, then each field's
    value (and its flag). The JSON document's rows are these columns zipped."""
    if len(key_fields) > 1:
        key_values = [list(column) for column in zip(*(pk for pk, _ in rows), strict=True)]
    else:
        key_values = [list(map(itemgetter(0), rows))]
    data = [
        _column(key, values, connection) for key, values in zip(key_fields, key_values, strict=True)
    ]
    dicts = list(map(itemgetter(1), rows))
    for field, flag in zip(fields, flagged, strict=True):
        attname = field.attname
        # Every row has the column unless it is flagged: taken out in C then.
        column = [v.get(attname) for v in dicts] if flag else list(map(itemgetter(attname), dicts))
        data.append(_column(field, column, connection))
        if flag:
            data.append([1 if attname in values else 0 for values in dicts])
    return data


def _execute(
    connection: BaseDatabaseWrapper,
    sql: str,
    items: list[tuple[Any, ...]],
    bound_params: list[Any],
    send: Send | None,
) -> int:
    document = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
    if len(document) > MAX_DOCUMENT_BYTES and len(items) > 1:
        half = len(items) // 2
        return _execute(connection, sql, items[:half], bound_params, send) + _execute(
            connection, sql, items[half:], bound_params, send
        )
    return _run(connection, sql, [document, *bound_params], send)


def _run(connection: BaseDatabaseWrapper, sql: str, params: list[Any], send: Send | None) -> int:
    """One write statement: offered to ``send`` first, else run now; returns 1 (statements)."""
    if send is not None and send(sql, params):
        return 1
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    return 1
