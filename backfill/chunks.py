"""How chunks are planned: keyset ranges over the primary key, independent of any filter.

A chunk is the half-open key range ``(lo, hi]``. Its upper bound is the ``size``-th primary key
after ``lo`` in the whole table (an index-only walk, never an OFFSET over the data), so chunks
stay full on sparse keys and a filter that matches few rows does not change the plan. Planning
stops at the run's end key, fixed when the run started, so rows inserted later are not chased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from backfill import keys


@dataclass(frozen=True)
class PlannedChunk:
    """The key range ``(lo, hi]``; ``lo`` None means from the start of the table."""

    lo: Any
    hi: Any
    id: int | None = None
    keys: int = 0


@dataclass(frozen=True)
class ChunkWork:
    """What processing one chunk did: rows read from it (None = not read) and rows written."""

    rows_read: int | None
    rows_changed: int


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
        # One column, or a composite key's columns in index order (compared as a row value).
        self.fields = keys.fields_of(pk)
        self.columns = [qn(str(f.column)) for f in self.fields]
        self.column = ", ".join(self.columns)
        self.aliases = (
            ["k"] if len(self.fields) == 1 else [f"k{i}" for i in range(len(self.fields))]
        )
        self.selected = ", ".join(
            f"{c} AS {a}" for c, a in zip(self.columns, self.aliases, strict=True)
        )

    def to_text(self, value: Any) -> str | None:
        """A key as stored in the run ledger (a JSON list for a composite key)."""
        return keys.to_text(self.fields, value)

    def from_text(self, text: str | None) -> Any:
        return keys.from_text(self.fields, text)

    def _params(self, value: Any) -> list[Any]:
        return [
            f.get_db_prep_value(f.to_python(v), self.connection)
            for f, v in zip(self.fields, keys.parts(value, self.fields), strict=True)
        ]

    def _key(self, row: Sequence[Any]) -> Any:
        """The key in the first columns of ``row``."""
        n = len(self.fields)
        return keys.to_python(self.fields, row[0] if n == 1 else row[:n])

    def _range(self, lo: Any, hi: Any) -> tuple[str, list[Any]]:
        """The WHERE condition and parameters of the keys in ``(lo, hi]``."""
        where = [keys.compare(self.columns, "<=")]
        params = self._params(hi)
        if lo is not None:
            where.insert(0, keys.compare(self.columns, ">"))
            params = [*self._params(lo), *params]
        return " AND ".join(where), params

    def key_range(self) -> KeyRange | None:
        """First and last key of the table now, or None when it is empty."""
        if len(self.fields) > 1:
            return self._composite_key_range()
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

    def _composite_key_range(self) -> KeyRange | None:
        descending = ", ".join(f"{c} DESC" for c in self.columns)
        edges = []
        with self.connection.cursor() as cursor:
            for order in (self.column, descending):
                cursor.execute(f"SELECT {self.column} FROM {self.table} ORDER BY {order} LIMIT 1")
                edges.append(cursor.fetchone())
        if edges[0] is None or edges[1] is None:
            return None
        return KeyRange(self._key(edges[0]), self._key(edges[1]))

    def next_chunk(self, lo: Any, end: Any, size: int) -> PlannedChunk | None:
        """The chunk after ``lo`` holding ``size`` keys (fewer at the end of the table)."""
        cond, params = self._range(lo, end)
        keys_sql = (
            f"SELECT {self.column} AS k FROM {self.table} WHERE {cond} "
            f"ORDER BY {self.column} LIMIT %s"
        )
        if len(self.fields) > 1 or (
            self.connection.vendor == "postgresql" and isinstance(self.pk, models.UUIDField)
        ):
            # PostgreSQL has no max(uuid), and a composite key is no single value to take the
            # MAX of: number the keys as the index yields them instead.
            sql = (
                f"SELECT {', '.join(self.aliases)}, n FROM (SELECT {self.selected}, "
                f"ROW_NUMBER() OVER (ORDER BY {self.column}) AS n FROM {self.table} WHERE {cond} "
                f"ORDER BY {self.column} LIMIT %s) chunk_keys ORDER BY n DESC LIMIT 1"
            )
        else:
            # The last of the next ``size`` keys, walking the primary key index from ``lo``:
            # only keys are read; the chunk's rows are read later by key range.
            sql = f"SELECT MAX(k), COUNT(*) FROM ({keys_sql}) chunk_keys"
        with self.connection.cursor() as cursor:
            cursor.execute(sql, [*params, size])
            row = cursor.fetchone()
        if row is None or not row[-1]:
            return None
        return PlannedChunk(lo, self._key(row), keys=int(row[-1]))

    def midpoint(self, chunk: PlannedChunk) -> Any | None:
        """A key that splits ``chunk`` in two halves, or None when it cannot be split."""
        cond, params = self._range(chunk.lo, chunk.hi)
        descending = ", ".join(f"{a} DESC" for a in self.aliases)
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {self.table} WHERE {cond}", params)
            count = int(cursor.fetchone()[0])
            if count < 2:
                return None
            cursor.execute(
                f"SELECT {', '.join(self.aliases)} FROM (SELECT {self.selected} FROM {self.table} "
                f"WHERE {cond} ORDER BY {self.column} LIMIT %s) chunk_keys "
                f"ORDER BY {descending} LIMIT 1",
                [*params, count // 2],
            )
            return self._key(cursor.fetchone())
