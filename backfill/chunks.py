"""How chunks are planned: keyset ranges over the primary key, independent of any filter.

A chunk is the half-open key range ``(lo, hi]``. Its upper bound is the ``size``-th primary key
after ``lo`` in the whole table (an index-only walk, never an OFFSET over the data), so chunks
stay full on sparse keys and a filter that matches few rows does not change the plan. Planning
stops at the run's end key, fixed when the run started, so rows inserted later are not chased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper


@dataclass(frozen=True)
class Chunk:
    """The key range ``(lo, hi]``; ``lo`` None means from the start of the table."""

    lo: Any
    hi: Any
    id: int | None = None
    keys: int = 0


@dataclass(frozen=True)
class KeyRange:
    """The whole table's keys at the start of a run."""

    first: Any
    last: Any


class KeyPlanner:
    """Reads primary-key bounds of one model's table."""

    def __init__(self, model: type[models.Model], connection: BaseDatabaseWrapper) -> None:
        pk = model._meta.pk
        assert pk is not None
        self.model = model
        self.pk = pk
        self.connection = connection
        qn = connection.ops.quote_name
        self.table = qn(model._meta.db_table)
        assert pk.column is not None
        self.column = qn(pk.column)

    def to_text(self, value: Any) -> str | None:
        """A key as stored in the run ledger."""
        return None if value is None else str(self.pk.to_python(value))

    def from_text(self, text: str | None) -> Any:
        return None if text is None else self.pk.to_python(text)

    def _param(self, value: Any) -> Any:
        return self.pk.get_db_prep_value(self.pk.to_python(value), self.connection)

    def key_range(self) -> KeyRange | None:
        """First and last key of the table now, or None when it is empty."""
        # ORDER BY … LIMIT 1 rather than MIN/MAX: PostgreSQL has no min(uuid), and both walk
        # the primary key index.
        col, table = self.column, self.table
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT (SELECT {col} FROM {table} ORDER BY {col} LIMIT 1), "
                f"(SELECT {col} FROM {table} ORDER BY {col} DESC LIMIT 1)"
            )
            row = cursor.fetchone()
        if row is None or row[1] is None:
            return None
        return KeyRange(self.pk.to_python(row[0]), self.pk.to_python(row[1]))

    def next_chunk(self, lo: Any, end: Any, size: int) -> Chunk | None:
        """The chunk after ``lo`` holding ``size`` keys (fewer at the end of the table)."""
        where = [f"{self.column} <= %s"]
        params: list[Any] = [self._param(end)]
        if lo is not None:
            where.insert(0, f"{self.column} > %s")
            params.insert(0, self._param(lo))
        keys = (
            f"SELECT {self.column} AS k FROM {self.table} WHERE {' AND '.join(where)} "
            f"ORDER BY {self.column} LIMIT %s"
        )
        if self.connection.vendor == "postgresql" and isinstance(self.pk, models.UUIDField):
            # PostgreSQL has no max(uuid): number the keys as the index yields them instead.
            sql = (
                f"SELECT k, n FROM (SELECT {self.column} AS k, ROW_NUMBER() OVER "
                f"(ORDER BY {self.column}) AS n FROM {self.table} WHERE {' AND '.join(where)} "
                f"ORDER BY {self.column} LIMIT %s) chunk_keys ORDER BY n DESC LIMIT 1"
            )
        else:
            # The last of the next ``size`` keys, walking the primary key index from ``lo``:
            # only keys are read; the chunk's rows are read later by key range.
            sql = f"SELECT MAX(k), COUNT(*) FROM ({keys}) chunk_keys"
        with self.connection.cursor() as cursor:
            cursor.execute(sql, [*params, size])
            row = cursor.fetchone()
        if row is None or not row[1]:
            return None
        return Chunk(lo, self.pk.to_python(row[0]), keys=int(row[1]))

    def midpoint(self, chunk: Chunk) -> Any | None:
        """A key that splits ``chunk`` in two halves, or None when it cannot be split."""
        where = [f"{self.column} <= %s"]
        params: list[Any] = [self._param(chunk.hi)]
        if chunk.lo is not None:
            where.insert(0, f"{self.column} > %s")
            params.insert(0, self._param(chunk.lo))
        cond = " AND ".join(where)
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {self.table} WHERE {cond}", params)
            count = int(cursor.fetchone()[0])
            if count < 2:
                return None
            cursor.execute(
                f"SELECT k FROM (SELECT {self.column} AS k FROM {self.table} WHERE {cond} "
                f"ORDER BY {self.column} LIMIT %s) chunk_keys ORDER BY k DESC LIMIT 1",
                [*params, count // 2],
            )
            return self.pk.to_python(cursor.fetchone()[0])
