"""Writing a chunk's changed rows back in one statement per table.

PostgreSQL gets one array parameter per column (``UPDATE … FROM unnest(%s::int[], …)``), so the
statement size and parameter count do not grow with the chunk. SQLite gets ``UPDATE … FROM``
over a ``VALUES`` list, split only when the chunk exceeds its parameter limit. MySQL and
MariaDB join a ``JSON_TABLE`` of the rows (``backfill.mysql``). Only columns that
changed are written; when rows changed different columns, a per-row flag keeps the others as
they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from backfill import keys, mysql
from backfill.database import is_postgres, query_param_limit

Change = tuple[Any, dict[str, Any]]  # (pk, {attname: new value}); pk a tuple for a composite key

# Field classes whose database value is the Python value itself when it already has this type.
# Exact classes only: a subclass (an encrypted CharField, say) may prepare values its own way.
PASS_THROUGH: dict[type[models.Field[Any, Any]], type] = {
    models.AutoField: int,
    models.BigAutoField: int,
    models.SmallAutoField: int,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.SmallIntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveBigIntegerField: int,
    models.PositiveSmallIntegerField: int,
    models.CharField: str,
    models.TextField: str,
    models.BooleanField: bool,
}


_values_of = itemgetter(1)


class Unknown:
    """``names`` not worked out yet: the callee works them out (``uniform_names``)."""


UNKNOWN = Unknown()


def uniform_names(changes: Sequence[Change]) -> tuple[str, ...] | None:
    """The attnames every change sets, when all set the same ones in the same order (a
    transform that sets one column: the usual case); None when they differ.

    One ``tuple`` per row built in C, so a chunk's columns can then be taken out with
    ``itemgetter`` instead of a Python-level loop over its rows per column.
    """
    shapes = set(map(tuple, map(_values_of, changes)))
    return shapes.pop() if len(shapes) == 1 else None


def array_type(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    """The element type of a column's array parameter: the column's type without a length
    (``varchar(60)`` becomes ``varchar``), since an explicit cast to ``varchar(60)`` cuts
    longer text without a word; the assignment to the column then checks the length.
    """
    return re.sub(r"^(varchar|character varying)\(\d+\)$", r"\1", field.db_type(connection) or "")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_array(values: Sequence[Any], kind: type) -> str:
    """PostgreSQL's text form of a one-dimensional array of ``kind`` (int, str or bool) values
    or None: ``{1,NULL,3}``, ``{"a","say \\"hi\\"",NULL}``, ``{t,f}``. Strings are always
    quoted, with backslash and double quote escaped, so commas, braces, spaces, ``NULL`` and
    newlines inside them stay data.
    """
    if kind is str:
        try:
            joined = '","'.join(values)
        except TypeError:  # a None among them
            joined = None
        # Nothing to escape (the only quotes are the separators'): one join.
        if (
            values
            and joined is not None
            and "\\" not in joined
            and joined.count('"') == 2 * (len(values) - 1)
        ):
            return '{"' + joined + '"}'
        items = ["NULL" if v is None else _quoted(v) for v in values]
    elif kind is bool:
        items = ["NULL" if v is None else "t" if v else "f" for v in values]
    elif None in values:
        items = ["NULL" if v is None else str(v) for v in values]
    else:
        items = list(map(str, values))
    return "{" + ",".join(items) + "}"


@dataclass(frozen=True)
class _Table:
    name: str
    pk: models.Field[Any, Any]
    fields: tuple[models.Field[Any, Any], ...]

    @property
    def key_fields(self) -> tuple[models.Field[Any, Any], ...]:
        """The key's columns: one, or a composite key's, each joined on."""
        return keys.fields_of(self.pk)

    def key_names(self) -> list[str]:
        """Names of the key's columns in the VALUES/unnest row: ``_k``, or ``_k0``, ``_k1``…"""
        if len(self.key_fields) == 1:
            return ['"_k"']
        return [f'"_k{j}"' for j in range(len(self.key_fields))]


def _tables(model: type[models.Model], attnames: Sequence[str]) -> list[_Table]:
    """Group changed fields by the table that stores them (MTI parents keep their own columns)."""
    by_model: dict[type[models.Model], list[models.Field[Any, Any]]] = {}
    for field in model._meta.concrete_fields:
        if field.attname in attnames:
            owner = field.model._meta.concrete_model or field.model
            by_model.setdefault(owner, []).append(field)
    return [
        _Table(owner._meta.db_table, owner._meta.pk, tuple(fields))
        for owner, fields in by_model.items()
        if owner._meta.pk is not None
    ]


class TableWrite(NamedTuple):
    """One table's part of a chunk's write: the columns it sets (``flagged``: set by only some
    rows, the others keep theirs), the changed rows and the chunk's key bounds."""

    table: _Table
    fields: Sequence[models.Field[Any, Any]]
    flagged: Sequence[bool]
    rows: Sequence[Change]
    bounds: tuple[str, list[Any]]


Send = mysql.Send


class BulkWriter:
    """Writes ``(pk, {attname: value})`` changes of one model with as few statements as possible.

    ``send``, when given, is offered each PostgreSQL ``unnest`` and MySQL statement first (the
    chunk reader's ``write_later``, which runs it while the next batch is transformed); a
    statement it refuses runs at once. Keep one writer for a chunk's writes: it asks MySQL's
    temporary table size once, not with every write.
    """

    def __init__(
        self,
        model: type[models.Model],
        connection: BaseDatabaseWrapper,
        send: Send | None = None,
    ) -> None:
        self.model = model
        self.connection = connection
        self.qn = connection.ops.quote_name
        self.send = send
        self._tmp_memory: float | None = None

    def write(
        self,
        changes: Sequence[Change],
        lo: Any = None,
        hi: Any = None,
        names: tuple[str, ...] | Unknown | None = UNKNOWN,
    ) -> int:
        """Write the changes; returns the number of rows written. Runs in the caller's transaction.

        ``lo``/``hi`` bound the keys, ``(lo, hi]``: they let PostgreSQL find the rows through a
        range scan of the primary key index instead of hashing the whole table.
        """
        if not changes:
            return 0
        if isinstance(names, Unknown):
            names = uniform_names(changes)
        changed = names if names is not None else {a for _, values in changes for a in values}
        tables = _tables(self.model, list(changed))
        for table in tables:
            rows = changes
            if len(tables) > 1:
                rows = [(pk, v) for pk, v in changes if any(f.attname in v for f in table.fields)]
            if rows:
                self._write_table(table, rows, self._range(table, lo, hi), names)
        return len(changes)

    def statement_count(self, changes: Sequence[Change]) -> int:
        """How many statements ``write`` would issue (for plans and tests)."""
        changed = {attname for _, values in changes for attname in values}
        return len(_tables(self.model, list(changed))) if changes else 0

    def _write_table(
        self,
        table: _Table,
        rows: Sequence[Change],
        bounds: tuple[str, list[Any]],
        names: tuple[str, ...] | None = None,
    ) -> None:
        if names is not None:
            # Every row sets the same columns: no row keeps a column as it is.
            fields = [f for f in table.fields if f.attname in names]
            flagged = [False] * len(fields)
        else:
            fields = [f for f in table.fields if any(f.attname in values for _, values in rows)]
            flagged = [not all(f.attname in values for _, values in rows) for f in fields]
        # unnest() flattens nested arrays, so array columns take the VALUES path instead.
        arrays = any((f.db_type(self.connection) or "").endswith("]") for f in fields)
        if is_postgres(self.connection) and not arrays:
            self._write_postgres(TableWrite(table, fields, flagged, rows, bounds))
        elif mysql.is_mysql(self.connection):
            mysql.update_from_json(
                self.connection,
                table.name,
                table.key_fields,
                fields,
                flagged,
                rows,
                bounds,
                memory=self._mysql_memory,
                send=self.send,
            )
        else:
            per_row = len(table.key_fields) + len(fields) + sum(flagged)
            # Some parameters are the chunk's key bounds (see _range), not rows.
            step = max(
                1, (query_param_limit(self.connection) - 2 * len(table.key_fields)) // per_row
            )
            for start in range(0, len(rows), step):
                batch = rows[start : start + step]
                self._write_values(TableWrite(table, fields, flagged, batch, bounds))

    def _mysql_memory(self) -> float:
        if self._tmp_memory is None:
            self._tmp_memory = mysql.tmp_memory(self.connection)
        return self._tmp_memory

    def _assignments(
        self, table: _Table, fields: Sequence[models.Field[Any, Any]], flagged: Sequence[bool]
    ) -> str:
        qn = self.qn
        parts = []
        for i, (field, flag) in enumerate(zip(fields, flagged, strict=True)):
            value = f'v."_v{i}"'
            if flag:
                current = f"{qn(table.name)}.{qn(str(field.column))}"
                value = f'CASE WHEN v."_s{i}" THEN {value} ELSE {current} END'
            parts.append(f"{qn(str(field.column))} = {value}")
        return ", ".join(parts)

    def _prep(self, field: models.Field[Any, Any], value: Any) -> Any:
        return field.get_db_prep_save(value, self.connection)

    def _array(self, field: models.Field[Any, Any], values: list[Any]) -> tuple[Any, str]:
        """One column's values as a single parameter, and its placeholder.

        Ints, strings and booleans that need no preparing go as the array's text form, built
        with ``str.join`` (several times faster than psycopg's per-element dumper); other values
        are prepared by the field and sent in binary where psycopg can.
        """
        kind = PASS_THROUGH.get(type(field))
        if kind is not None and all(type(v) is kind or v is None for v in values):
            return text_array(values, kind), "%s"
        connection = self.connection
        prep = field.get_db_prep_save
        binary = kind is not None or isinstance(field, models.UUIDField)
        return [prep(v, connection) for v in values], "%b" if binary else "%s"

    def _binding_cursor(self) -> Any:
        """A server-side-binding psycopg cursor, wrapped like Django's own (so query logging
        and CaptureQueriesContext still see it). Django's default psycopg cursor binds on the
        client, which would quote every array element into the SQL text. ``prepare=False`` at
        execute keeps it safe behind pgbouncer in transaction mode.
        """
        import psycopg

        class UnpreparedCursor(psycopg.Cursor):
            def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
                return super().execute(query, params, prepare=False)

        self.connection.ensure_connection()
        raw = UnpreparedCursor(self.connection.connection)
        # Django's own wrapping step (private, stable since 1.x): logging and execute wrappers.
        return self.connection._prepare_cursor(raw)  # type: ignore[attr-defined]

    def _key_prep(self, table: _Table, key: Any) -> list[Any]:
        return [
            self._prep(f, v)
            for f, v in zip(table.key_fields, keys.parts(key, table.key_fields), strict=True)
        ]

    def _join(self, table: _Table) -> str:
        """``table.key = v."_k"``, for every key column."""
        return " AND ".join(
            f"{self.qn(table.name)}.{self.qn(str(f.column))} = v.{name}"
            for f, name in zip(table.key_fields, table.key_names(), strict=True)
        )

    def _range(self, table: _Table, lo: Any, hi: Any) -> tuple[str, list[Any]]:
        """The ``AND key > lo AND key <= hi`` that bounds a statement to the chunk's keys."""
        columns = [f"{self.qn(table.name)}.{self.qn(str(f.column))}" for f in table.key_fields]
        sql, params = "", []
        if lo is not None:
            sql += f" AND {keys.compare(columns, '>')}"
            params.extend(self._key_prep(table, lo))
        if hi is not None:
            sql += f" AND {keys.compare(columns, '<=')}"
            params.extend(self._key_prep(table, hi))
        return sql, params

    def _write_postgres(self, write: TableWrite) -> None:
        """One ``UPDATE … FROM unnest(arrays)``: each column's values as one typed array."""
        table, fields, flagged, rows, bounds = write
        qn = self.qn
        conn = self.connection
        arrays: list[Any] = []
        casts = []
        names = table.key_names()
        for j, key_field in enumerate(table.key_fields):
            key_values = (
                list(map(itemgetter(0), rows))
                if len(table.key_fields) == 1
                else [pk[j] for pk, _ in rows]
            )
            array, placeholder = self._array(key_field, key_values)
            arrays.append(array)
            casts.append(f"{placeholder}::{key_field.db_type(conn)}[]")
        dicts = list(map(_values_of, rows)) if not any(flagged) else None
        for i, field in enumerate(fields):
            attname = field.attname
            column = (
                list(map(itemgetter(attname), dicts))
                if dicts is not None
                else [values.get(attname) for _, values in rows]
            )
            array, placeholder = self._array(field, column)
            arrays.append(array)
            casts.append(f"{placeholder}::{array_type(field, conn)}[]")
            names.append(f'"_v{i}"')
        for i, (field, flag) in enumerate(zip(fields, flagged, strict=True)):
            if flag:
                arrays.append(text_array([field.attname in values for _, values in rows], bool))
                casts.append("%s::boolean[]")
                names.append(f'"_s{i}"')
        where, bound_params = bounds
        sql = (
            f"UPDATE {qn(table.name)} SET {self._assignments(table, fields, flagged)} "
            f"FROM unnest({', '.join(casts)}) AS v({', '.join(names)}) "
            f"WHERE {self._join(table)}{where}"
        )
        params = [*arrays, *bound_params]
        if self.send is not None and self.send(sql, params):
            return
        with self._binding_cursor() as cursor:
            cursor.execute(sql, params)

    def _write_values(self, write: TableWrite) -> None:
        """One ``UPDATE … FROM (VALUES …)`` for the rows the backend's parameter limit allows."""
        table, fields, flagged, rows, bounds = write
        qn = self.qn
        names = [*table.key_names(), *(f'"_v{i}"' for i in range(len(fields)))]
        names += [f'"_s{i}"' for i, flag in enumerate(flagged) if flag]
        params: list[Any] = []
        for pk, values in rows:
            params.extend(self._key_prep(table, pk))
            params.extend(self._prep(f, values.get(f.attname)) for f in fields)
            params.extend(
                f.attname in values for f, flag in zip(fields, flagged, strict=True) if flag
            )
        if is_postgres(self.connection):
            # VALUES has no column types of its own on PostgreSQL: cast each placeholder.
            types = [
                *(f.db_type(self.connection) for f in table.key_fields),
                *(array_type(f, self.connection) for f in fields),
            ]
            types += ["boolean" for flag in flagged if flag]
            row_sql = "(" + ", ".join(f"%s::{t}" for t in types) + ")"
        else:
            row_sql = "(" + ", ".join(["%s"] * len(names)) + ")"
        where, bound_params = bounds
        sql = (
            f"WITH v({', '.join(names)}) AS (VALUES {', '.join([row_sql] * len(rows))}) "
            f"UPDATE {qn(table.name)} SET {self._assignments(table, fields, flagged)} "
            f"FROM v WHERE {self._join(table)}{where}"
        )
        with self.connection.cursor() as cursor:
            cursor.execute(sql, [*params, *bound_params])
