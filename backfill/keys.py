"""What a row's key is: the primary key's one column, or the tuple of a ``CompositePrimaryKey``.

Chunks, checkpoints, row reads and bulk writes all work on "the key". A single-column key is
the field's value, as it always was. A composite key (Django 5.2+) is a tuple in the order of
the key's fields, which is the order of its index: keyset chunks compare it as a row value,
``(tenant_id, id) > (%s, %s)``, so ``(1, 5)`` comes before ``(2, 1)``. Every backend this app
runs on compares row values (PostgreSQL, MySQL/MariaDB, and SQLite since 3.15; Django 5.2
needs 3.31).

The ledger stores keys as text: a single key as its text, as before (``42``, ``abc``, a UUID),
a composite key as a JSON list (``[2, 17]``), which ``CompositePrimaryKey.to_python`` reads too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, cast

from django.db import models
from django.db.models import Q
from django.db.models.fields.composite import CompositePrimaryKey


def fields_of(pk: models.Field[Any, Any]) -> tuple[models.Field[Any, Any], ...]:
    """The columns of a primary key in index order: a composite key's fields, else itself."""
    if isinstance(pk, CompositePrimaryKey):
        return tuple(cast("list[models.Field[Any, Any]]", pk.fields))
    return (pk,)


def key_fields(model: type[models.Model]) -> tuple[models.Field[Any, Any], ...]:
    """The fields holding ``model``'s primary key, in index order."""
    pk = model._meta.pk
    assert pk is not None
    return fields_of(pk)


def is_composite(model: type[models.Model]) -> bool:
    return isinstance(model._meta.pk, CompositePrimaryKey)


def parts(key: Any, fields: Sequence[models.Field[Any, Any]]) -> tuple[Any, ...]:
    """A key as one value per key column."""
    return tuple(key) if len(fields) > 1 else (key,)


def row_key(model: type[models.Model]) -> Callable[[dict[str, Any]], Any]:
    """Reads the key from an instance's ``__dict__``: the value, or the tuple of a composite key."""
    return itemgetter(*(f.attname for f in key_fields(model)))


def compare(columns: Sequence[str], op: str) -> str:
    """SQL comparing the (quoted) key columns with one placeholder per column:
    ``"id" > %s``, or the row value ``("tenant_id", "id") > (%s, %s)``.
    """
    if len(columns) == 1:
        return f"{columns[0]} {op} %s"
    return f"({', '.join(columns)}) {op} ({', '.join(['%s'] * len(columns))})"


def to_python(fields: Sequence[models.Field[Any, Any]], value: Any) -> Any:
    """A key as the fields give it: one value, or a tuple for a composite key."""
    if len(fields) == 1:
        return fields[0].to_python(value)
    return tuple(f.to_python(v) for f, v in zip(fields, value, strict=True))


def to_text(fields: Sequence[models.Field[Any, Any]], value: Any) -> str | None:
    """A key as the ledger stores it: its text, or a JSON list for a composite key."""
    if value is None:
        return None
    if len(fields) == 1:
        return str(fields[0].to_python(value))
    return json.dumps([_plain(v) for v in to_python(fields, value)])


def from_text(fields: Sequence[models.Field[Any, Any]], text: str | None) -> Any:
    if text is None:
        return None
    return to_python(fields, json.loads(text) if len(fields) > 1 else text)


def _plain(value: Any) -> Any:
    """A key part as JSON keeps it: numbers and strings as they are, others (UUID, date) as text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def range_q(model: type[models.Model], lo: Any, hi: Any) -> Q:
    """The ORM condition for keys in ``(lo, hi]`` (``lo`` None: from the table's start).

    For a composite key Django compares the tuple (``pk__gt=(1, 5)``); where it spells that
    as ``OR``s (SQLite), the added bounds on the first key column keep the read a range of the
    primary key index instead of a walk from its start.
    """
    q = Q(pk__lte=hi) if lo is None else Q(pk__gt=lo, pk__lte=hi)
    fields = key_fields(model)
    if len(fields) > 1:
        first = fields[0].attname
        q &= Q(**{f"{first}__lte": hi[0]})
        if lo is not None:
            q &= Q(**{f"{first}__gte": lo[0]})
    return q
