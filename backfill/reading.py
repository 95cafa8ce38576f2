"""How a chunk's rows are read: in batches, with the server kept busy while Python works.

On PostgreSQL the chunk's query runs as a server-side cursor (``DECLARE … NO SCROLL CURSOR``,
inside the chunk's transaction) read ``FETCH FORWARD n`` at a time, and the connection keeps one
statement in flight while the caller works on a batch: the write of the batch before it, when the
caller queued one (``write_later``), else the next ``FETCH``. So the server writes (or reads and
row-locks) while Python transforms, instead of the two taking turns. Memory stays at two batches
whatever the chunk size. A queued write is sent as text parameters with libpq's asynchronous
call; one it cannot send that way (a value that is not text or a whole number) is refused, and
the caller runs it at once, as any statement.

A transform may query the database itself (a lazy foreign key, a lookup table). While a
statement is in flight the connection is busy, so every statement Django runs on it first
collects that statement's result (an execute wrapper); nothing else changes for the transform.
A write that failed fails the chunk, even if the transform caught the error.

On MySQL and MariaDB the chunk's query runs as a plain one: mysqlclient stores its rows in
memory as it runs, so the connection is free while they are handed out in batches. Each batch's
write is sent at once, without waiting (mysqlclient's ``send_query``), and the server runs it
while the caller transforms the next batch; its result is collected before the connection's
next statement, the same way as on PostgreSQL.

Elsewhere (SQLite, ``DISABLE_SERVER_SIDE_CURSORS``) the query runs as a plain one, read with
``fetchmany``, and nothing is written ahead.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from django.db.backends.base.base import BaseDatabaseWrapper

from backfill import mysql
from backfill.database import is_postgres

Batch = list[tuple[Any, ...]]

_names = itertools.count(1)

_PLACEHOLDER = re.compile(r"%s")

_W = TypeVar("_W", bound="_Watched")


class Batches(Protocol):
    """A chunk's rows in batches; ``write_later`` queues a write to run while the caller works
    on the next batch, or returns False when the caller must run it itself, now."""

    writes_ahead: bool  # whether writes are worth queueing batch by batch

    def __iter__(self) -> Iterator[Batch]: ...

    def write_later(self, sql: str, params: Sequence[Any]) -> bool: ...


def wire_form(sql: str, params: Sequence[Any], encoding: str) -> tuple[bytes, list[bytes]] | None:
    """``sql`` with ``$n`` placeholders and its parameters as text in the connection's
    ``encoding``, for libpq's own call; None unless every parameter is a ``str`` without a NUL
    (libpq would cut it there) that the encoding can hold, or a whole number, and every ``%``
    in ``sql`` is a ``%s`` placeholder. The server infers each parameter's type, as psycopg
    lets it for a ``str``.
    """
    pieces = _PLACEHOLDER.split(sql)
    if len(pieces) != len(params) + 1 or any("%" in piece for piece in pieces):
        return None
    texts = []
    for value in params:
        if type(value) is int:
            texts.append(str(value))
        elif type(value) is str and "\x00" not in value:
            texts.append(value)
        else:
            return None
    query = pieces[0] + "".join(f"${n}{piece}" for n, piece in enumerate(pieces[1:], start=1))
    try:
        return query.encode(encoding), [text.encode(encoding) for text in texts]
    except UnicodeEncodeError:
        return None


def uses_server_side_cursor(connection: BaseDatabaseWrapper) -> bool:
    """Whether chunks are read through a server-side cursor on this connection."""
    return is_postgres(connection) and not connection.settings_dict.get(
        "DISABLE_SERVER_SIDE_CURSORS"
    )


@contextmanager
def batches(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any], size: int
) -> Iterator[Batches]:
    """The rows of ``sql`` as batches of at most ``size`` tuples, read ahead on PostgreSQL.

    Use it as ``with batches(...) as rows: for batch in rows: …``; leaving the block normally
    runs a queued write and collects its result; leaving it early (a ``break``, an exception)
    collects a statement still in flight, so the connection is free for the rollback or the next
    statement. Database errors are Django's, as for any query.
    """
    if uses_server_side_cursor(connection):
        with _watched(connection, _ReadAhead(connection, sql, params, size)) as reader:
            yield reader
        return
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if not mysql.sends_ahead(connection):
            yield _Fetched(cursor, size)
            return
        with _watched(connection, _SentAhead(connection, cursor, size)) as sender:
            yield sender


class _Watched(Protocol):
    def before_query(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any: ...

    def finish(self, *, failed: bool) -> None: ...


@contextmanager
def _watched(connection: BaseDatabaseWrapper, reader: _W) -> Iterator[_W]:
    """``reader`` with every other statement on ``connection`` waiting for the one it has in
    flight (an execute wrapper), finished when the block ends: normally, or failing."""
    with connection.execute_wrapper(reader.before_query):
        try:
            yield reader
        except BaseException:
            reader.finish(failed=True)
            raise
        reader.finish(failed=False)


class _Fetched:
    """A plain query's rows read with ``fetchmany``; writes run when they are written."""

    writes_ahead = False

    def __init__(self, cursor: Any, size: int) -> None:
        self.cursor = cursor
        self.size = size

    def __iter__(self) -> Iterator[Batch]:
        # mysqlclient ends with (), not []: both end the batches.
        return iter(lambda: self.cursor.fetchmany(self.size) or [], [])

    def write_later(self, sql: str, params: Sequence[Any]) -> bool:
        return False


class _SentAhead(_Fetched):
    """MySQL: the chunk's rows, stored by mysqlclient, handed out in batches; each write is
    sent at once and collected before the connection's next statement (one in flight)."""

    writes_ahead = True

    def __init__(self, connection: BaseDatabaseWrapper, cursor: Any, size: int) -> None:
        super().__init__(cursor, size)
        self.connection = connection
        self.in_flight: _Write | None = None
        self.failure: BaseException | None = None
        self.done = False

    def __iter__(self) -> Iterator[Batch]:
        for batch in super().__iter__():
            if self.failure is not None:
                raise self.failure
            yield batch

    def write_later(self, sql: str, params: Sequence[Any]) -> bool:
        if self.done:
            return False
        if self.failure is not None:
            # MySQL keeps the transaction after a failed statement: send nothing more into it.
            raise self.failure
        # Quoted while the server may still run the write before it.
        query = mysql.statement(self.connection, sql, params)
        if query is None:
            return False
        self._collect()
        write = _Write(query, [])
        write.start = time.monotonic()
        mysql.send(self.connection, query)
        self.in_flight = write
        return True

    def _collect(self) -> None:
        """Wait for the write in flight. Its error is raised, and kept in ``failure``: the chunk
        fails with it even if a transform's query met it and caught it."""
        write, self.in_flight = self.in_flight, None
        if write is None:
            return
        try:
            mysql.receive(self.connection)
        except Exception as exc:
            self.failure = exc
            raise
        finally:
            write.logged(self.connection)

    def before_query(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        """Django's execute wrapper: a statement of the transform's waits for the one in flight."""
        self._collect()
        return execute(sql, params, many, context)

    def finish(self, *, failed: bool) -> None:
        """Collect the write in flight; raise a write's failure unless already failing."""
        self.done = True
        try:
            self._collect()
            if self.failure is not None:
                raise self.failure
        except Exception:
            if not failed:
                raise


class _ReadAhead:
    """A server-side cursor with one statement kept in flight (libpq's asynchronous calls): the
    next ``FETCH``, or the write of the batch before."""

    writes_ahead = True

    def __init__(
        self, connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any], size: int
    ) -> None:
        from psycopg import generators
        from psycopg.adapt import Transformer

        self.connection = connection
        self.size = size
        self.cursor = connection.cursor()
        name = connection.ops.quote_name(f"backfill_rows_{next(_names)}")
        # Through Django's cursor: logged, errors translated, the connection's adapters.
        self.cursor.execute(f"DECLARE {name} NO SCROLL CURSOR FOR {sql}", params)
        self.close_sql = f"CLOSE {name}"
        self.fetch_sql = f"FETCH FORWARD {int(size)} FROM {name}".encode()
        self.raw = connection.connection
        self.pgconn = self.raw.pgconn
        # Loads rows the way this Django cursor would (its time zone loader included).
        self.loader = Transformer.from_context(self.cursor.cursor)
        self._send_gen: Callable[[Any], Any] = generators.send
        self._fetch_gen: Callable[[Any], Any] = generators.fetch_many
        self.in_flight: _Write | bool = False  # a FETCH (True), a write, or nothing (False)
        self.ready: Batch | None = None
        self.queued: _Write | None = None
        self.failure: BaseException | None = None

    def _send(self, query: bytes, params: list[bytes] | None, what: _Write | bool) -> None:
        with self.connection.wrap_database_errors:
            self.pgconn.send_query_params(query, params)
            self.in_flight = what  # from here on, its result must be collected
            self.raw.wait(self._send_gen(self.pgconn))

    def _result(self, wanted: Any) -> Any:
        from psycopg import errors

        self.in_flight = False
        (result,) = self.raw.wait(self._fetch_gen(self.pgconn))
        if result.status != wanted:
            raise errors.error_from_result(result, encoding=self.raw.info.encoding)
        return result

    def _collect(self) -> None:
        """Wait for the statement in flight: a FETCH's rows become ``ready``. A statement that
        failed raises Django's error, as any query, and the error is kept in ``failure``: the
        chunk fails with it even if a transform's query met it and caught it (the statements
        after it would only say the transaction is aborted, and a lock timeout would no longer
        be retried as one)."""
        write = self.in_flight
        try:
            if write is True:
                self._take_rows()
            elif isinstance(write, _Write):
                self._take_write(write)
        except Exception as exc:
            self.failure = exc
            raise

    def _take_rows(self) -> None:
        from psycopg import pq

        with self.connection.wrap_database_errors:
            result = self._result(pq.ExecStatus.TUPLES_OK)
        self.loader.set_pgresult(result)
        self.ready = list(self.loader.load_rows(0, result.ntuples, tuple))

    def _take_write(self, write: _Write) -> None:
        from psycopg import pq

        try:
            with self.connection.wrap_database_errors:
                self._result(pq.ExecStatus.COMMAND_OK)
        finally:
            write.logged(self.connection)

    def write_later(self, sql: str, params: Sequence[Any]) -> bool:
        """Queue a write to run while the caller works on the next batch (one at a time: a
        write still queued is run first); False when it cannot be sent this way."""
        wire = wire_form(sql, params, self.raw.info.encoding)
        if wire is None:
            return False
        if self.queued is not None:
            self._run_queued()
        self.queued = _Write(*wire)
        return True

    def _send_queued(self) -> None:
        """Send the queued write (the connection must be free)."""
        write, self.queued = self.queued, None
        assert write is not None
        write.start = time.monotonic()
        self._send(write.query, write.params, write)

    def _run_queued(self) -> None:
        if self.in_flight:
            self._collect()
        if self.queued is not None:
            self._send_queued()
            self._collect()

    def before_query(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        """Django's execute wrapper: a statement of the transform's waits for the one in flight."""
        if self.in_flight:
            self._collect()
        return execute(sql, params, many, context)

    def __iter__(self) -> Iterator[Batch]:
        more = True
        while True:
            if self.failure is not None:
                raise self.failure
            if self.in_flight:
                self._collect()
            if self.ready is None:
                if not more:
                    return
                self._send(self.fetch_sql, None, True)
                self._collect()
            batch, self.ready = self.ready or [], None
            more = len(batch) == self.size
            # While the caller works on this batch, the server writes the one before, or reads
            # (and row-locks) the next.
            if self.queued is not None:
                self._send_queued()
            elif more:
                self._send(self.fetch_sql, None, True)
            if batch:
                yield batch

    def finish(self, *, failed: bool) -> None:
        """Collect a statement still in flight; unless the transaction failed, run a queued
        write and close the cursor."""
        try:
            if self.in_flight:
                self._collect()
            if not failed:
                if self.failure is not None:
                    raise self.failure
                self._run_queued()
                self.cursor.execute(self.close_sql)
        except Exception:
            if not failed:
                raise
            # Already failing: the first error is the one to report; the rollback follows.
        finally:
            self.cursor.close()


class _Write:
    """A queued write, as libpq sends it."""

    def __init__(self, query: bytes, params: list[bytes]) -> None:
        self.query = query
        self.params = params
        self.start = 0.0

    def logged(self, connection: BaseDatabaseWrapper) -> None:
        """Into ``connection.queries`` when Django logs queries (DEBUG, CaptureQueriesContext)."""
        if connection.queries_logged:
            connection.queries_log.append(
                {
                    "sql": self.query.decode(errors="replace"),
                    "time": f"{time.monotonic() - self.start:.3f}",
                }
            )
