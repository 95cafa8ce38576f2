"""How a chunk's rows are read: in batches, with the next batch already on its way.

On PostgreSQL the chunk's query runs as a server-side cursor (``DECLARE … NO SCROLL CURSOR``,
inside the chunk's transaction) read ``FETCH FORWARD n`` at a time. The next ``FETCH`` is sent
before the current batch is handed out, so the server reads (and row-locks) batch k+1 while
Python transforms batch k: the two overlap instead of taking turns. Memory stays at two batches
whatever the chunk size.

A transform may query the database itself (a lazy foreign key, a lookup table). While a
``FETCH`` is in flight the connection is busy, so every statement Django runs on it first
collects that ``FETCH``'s rows (an execute wrapper); nothing else changes for the transform.

Elsewhere (SQLite, ``DISABLE_SERVER_SIDE_CURSORS``) the query runs as a plain one, read with
``fetchmany``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from backfill.database import is_postgres

Batch = list[tuple[Any, ...]]

_names = itertools.count(1)


def uses_server_side_cursor(connection: BaseDatabaseWrapper) -> bool:
    """Whether chunks are read through a server-side cursor on this connection."""
    return is_postgres(connection) and not connection.settings_dict.get(
        "DISABLE_SERVER_SIDE_CURSORS"
    )


@contextmanager
def batches(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any], size: int
) -> Iterator[Iterator[Batch]]:
    """The rows of ``sql`` as batches of at most ``size`` tuples, read ahead on PostgreSQL.

    Use it as ``with batches(...) as rows: for batch in rows: …``; leaving the block early (a
    ``break``, an exception) collects a ``FETCH`` still in flight, so the connection is free
    for the rollback or the next statement. Database errors are Django's, as for any query.
    """
    if uses_server_side_cursor(connection):
        reader = _ReadAhead(connection, sql, params, size)
        with connection.execute_wrapper(reader.before_query):
            try:
                yield reader.batches()
            except BaseException:
                reader.finish(failed=True)
                raise
            reader.finish(failed=False)
        return
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # mysqlclient ends with (), not []: both end the batches.
        yield iter(lambda: cursor.fetchmany(size) or [], [])


class _ReadAhead:
    """A server-side cursor with one ``FETCH`` kept in flight (libpq's asynchronous calls)."""

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
        self.in_flight = False
        self.ready: Batch | None = None

    def _send(self) -> None:
        with self.connection.wrap_database_errors:
            self.pgconn.send_query_params(self.fetch_sql, None)
            self.in_flight = True  # from here on, its result must be collected
            self.raw.wait(self._send_gen(self.pgconn))

    def _collect(self) -> Batch:
        from psycopg import errors, pq

        with self.connection.wrap_database_errors:
            self.in_flight = False
            results = self.raw.wait(self._fetch_gen(self.pgconn))
            (result,) = results
            if result.status != pq.ExecStatus.TUPLES_OK:
                raise errors.error_from_result(result, encoding=self.raw.info.encoding)
            self.loader.set_pgresult(result)
            return list(self.loader.load_rows(0, result.ntuples, tuple))

    def before_query(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        """Django's execute wrapper: a statement of the transform's waits for the FETCH first."""
        if self.in_flight:
            self.ready = self._collect()
        return execute(sql, params, many, context)

    def batches(self) -> Iterator[Batch]:
        self._send()
        while True:
            batch = self.ready if self.ready is not None else self._collect()
            self.ready = None
            full = len(batch) == self.size
            if full:
                self._send()  # the server reads the next batch while the caller works on this one
            if batch:
                yield batch
            if not full:
                return

    def finish(self, *, failed: bool) -> None:
        """Collect a FETCH still in flight; close the cursor unless the transaction failed."""
        try:
            if self.in_flight:
                self._collect()
            if not failed:
                self.cursor.execute(self.close_sql)
        except Exception:
            if not failed:
                raise
            # Already failing: the first error is the one to report; the rollback follows.
        finally:
            self.cursor.close()
