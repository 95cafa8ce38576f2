"""Writing a chunk's changed rows back in one statement per table.

PostgreSQL gets one array parameter per column (``UPDATE … FROM unnest(%s::int[], …)``), so the
statement size and parameter count do not grow with the chunk. SQLite gets ``UPDATE … FROM``
over a ``VALUES`` list, split only when the chunk exceeds its parameter limit. Only columns that
changed are written; when rows changed different columns, a per-row flag keeps the others as
they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from backfill.database import is_postgres, query_param_limit

Change = tuple[Any, dict[str, Any]]  # (pk, {attname: new value})


@dataclass(frozen=True)
class _Table:
    name: str
    pk: models.Field
    fields: tuple[models.Field, ...]


def _tables(model: type[models.Model], attnames: Sequence[str]) -> list[_Table]:
    """Group changed fields by the table that stores them (MTI parents keep their own columns)."""
    by_model: dict[type[models.Model], list[models.Field]] = {}
    for field in model._meta.concrete_fields:
        if field.attname in attnames:
            owner = field.model._meta.concrete_model or field.model
            by_model.setdefault(owner, []).append(field)
    return [
        _Table(owner._meta.db_table, owner._meta.pk, tuple(fields))
        for owner, fields in by_model.items()
        if owner._meta.pk is not None
    ]


class BulkWriter:
    """Writes ``(pk, {attname: value})`` changes of one model with as few statements as possible."""

    def __init__(self, model: type[models.Model], connection: BaseDatabaseWrapper) -> None:
        self.model = model
        self.connection = connection
        self.qn = connection.ops.quote_name

    def write(self, changes: Sequence[Change]) -> int:
        """Write the changes; returns the number of rows written. Runs in the caller's transaction."""
        if not changes:
            return 0
        changed = {attname for _, values in changes for attname in values}
        for table in _tables(self.model, list(changed)):
            rows = [
                (pk, values)
                for pk, values in changes
                if any(f.attname in values for f in table.fields)
            ]
            if rows:
                self._write_table(table, rows)
        return len(changes)

    def statement_count(self, changes: Sequence[Change]) -> int:
        """How many statements ``write`` would issue (for plans and tests)."""
        changed = {attname for _, values in changes for attname in values}
        return len(_tables(self.model, list(changed))) if changes else 0

    def _write_table(self, table: _Table, rows: Sequence[Change]) -> None:
        fields = [f for f in table.fields if any(f.attname in values for _, values in rows)]
        flagged = [not all(f.attname in values for _, values in rows) for f in fields]
        if is_postgres(self.connection):
            self._write_postgres(table, fields, flagged, rows)
        else:
            per_row = 1 + len(fields) + sum(flagged)
            step = max(1, query_param_limit(self.connection) // per_row)
            for start in range(0, len(rows), step):
                self._write_values(table, fields, flagged, rows[start : start + step])

    def _assignments(
        self, table: _Table, fields: Sequence[models.Field], flagged: Sequence[bool]
    ) -> str:
        qn = self.qn
        parts = []
        for i, (field, flag) in enumerate(zip(fields, flagged, strict=True)):
            value = f'v."_v{i}"'
            if flag:
                value = (
                    f'CASE WHEN v."_s{i}" THEN {value} ELSE {qn(table.name)}.{qn(field.column)} END'
                )
            parts.append(f"{qn(field.column)} = {value}")
        return ", ".join(parts)

    def _prep(self, field: models.Field, value: Any) -> Any:
        return field.get_db_prep_save(value, self.connection)

    def _write_postgres(
        self,
        table: _Table,
        fields: Sequence[models.Field],
        flagged: Sequence[bool],
        rows: Sequence[Change],
    ) -> None:
        qn = self.qn
        conn = self.connection
        pk_type = table.pk.db_type(conn)
        arrays: list[list[Any]] = [[self._prep(table.pk, pk) for pk, _ in rows]]
        casts = [f"%s::{pk_type}[]"]
        names = ['"_k"']
        for i, field in enumerate(fields):
            attname = field.attname
            arrays.append([self._prep(field, values.get(attname)) for _, values in rows])
            casts.append(f"%s::{field.db_type(conn)}[]")
            names.append(f'"_v{i}"')
        for i, (field, flag) in enumerate(zip(fields, flagged, strict=True)):
            if flag:
                arrays.append([field.attname in values for _, values in rows])
                casts.append("%s::boolean[]")
                names.append(f'"_s{i}"')
        sql = (
            f"UPDATE {qn(table.name)} SET {self._assignments(table, fields, flagged)} "
            f"FROM unnest({', '.join(casts)}) AS v({', '.join(names)}) "
            f'WHERE {qn(table.name)}.{qn(table.pk.column)} = v."_k"'
        )
        with conn.cursor() as cursor:
            cursor.execute(sql, arrays)

    def _write_values(
        self,
        table: _Table,
        fields: Sequence[models.Field],
        flagged: Sequence[bool],
        rows: Sequence[Change],
    ) -> None:
        qn = self.qn
        names = ['"_k"', *(f'"_v{i}"' for i in range(len(fields)))]
        names += [f'"_s{i}"' for i, flag in enumerate(flagged) if flag]
        params: list[Any] = []
        for pk, values in rows:
            params.append(self._prep(table.pk, pk))
            params.extend(self._prep(f, values.get(f.attname)) for f in fields)
            params.extend(
                f.attname in values for f, flag in zip(fields, flagged, strict=True) if flag
            )
        row_sql = "(" + ", ".join(["%s"] * len(names)) + ")"
        sql = (
            f"WITH v({', '.join(names)}) AS (VALUES {', '.join([row_sql] * len(rows))}) "
            f"UPDATE {qn(table.name)} SET {self._assignments(table, fields, flagged)} "
            f'FROM v WHERE {qn(table.name)}.{qn(table.pk.column)} = v."_k"'
        )
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
