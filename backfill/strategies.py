"""How one chunk is read, transformed and written, for each of the three strategies.

Every ``process`` call runs inside the chunk's transaction, opened by the runner.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol, cast

from django.db import DatabaseError, connections, models
from django.db.models import Expression, F, Func, Q, QuerySet, Value, signals
from django.db.models.base import ModelState
from django.db.models.sql import UpdateQuery

from backfill import keys, reading
from backfill.chunk_writes import ChunkWrites
from backfill.chunks import ChunkWork, PlannedChunk
from backfill.columns import check_changes, check_guards, expression_guards
from backfill.exceptions import ChunkFailed, TransformFailed
from backfill.transforms import Transform

PREVIEW_ROWS = 5
FETCH_SIZE = 2000


@dataclass(frozen=True)
class PreviewRow:
    pk: Any
    before: dict[str, Any]
    after: dict[str, Any]


@dataclass(frozen=True)
class Description:
    """What a strategy shows in ``--dry-run`` and records as the run's identity."""

    spec: dict[str, Any]
    statements: list[str] = field(default_factory=list)


class Strategy(Protocol):
    kind: str
    # Whether the chunk's rows are locked before Python reads them (the strategies that read
    # rows into Python); a single UPDATE locks the rows it writes by itself.
    locks_rows: bool
    queryset: QuerySet[Any]

    def process(self, chunk: PlannedChunk, *, lock: bool) -> ChunkWork: ...

    def preview(self, chunk: PlannedChunk) -> list[PreviewRow]: ...

    def describe(self, chunk: PlannedChunk | None) -> Description: ...

    def notes(self) -> list[str]: ...


class IsDistinctFrom(Func):
    """NULL-safe inequality: ``a IS DISTINCT FROM b`` (SQLite spells it ``a IS NOT b``, MySQL
    ``NOT (a <=> b)``)."""

    arg_joiner = " IS DISTINCT FROM "
    template = "(%(expressions)s)"
    output_field = models.BooleanField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, arg_joiner=" IS NOT ", **extra)

    def as_mysql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # MySQL's NULL-safe equality is <=>. Text compares as bytes: the usual collations
        # are case- and trailing-space-insensitive, and would call 'Ann' and 'ann ' equal.
        # Values that differ under the collation differ as bytes too, so the cheaper
        # collation test goes first and only the rows it calls equal are cast (about 1 s of
        # a 4M-row UPDATE's 11 s on MariaDB; docs/mysql.md).
        lhs, rhs = self.get_source_expressions()
        (lhs_sql, lhs_params), (rhs_sql, rhs_params) = map(compiler.compile, (lhs, rhs))
        differs = f"NOT ({lhs_sql} <=> {rhs_sql})"
        if not isinstance(lhs.output_field, (models.CharField, models.TextField)):
            return differs, [*lhs_params, *rhs_params]
        as_bytes = f"NOT (CAST({lhs_sql} AS BINARY) <=> CAST({rhs_sql} AS BINARY))"
        return f"({differs} OR {as_bytes})", [*lhs_params, *rhs_params] * 2


def holds_mutable(field: models.Field[Any, Any]) -> bool:
    """Whether the field's values can change in place (``obj.data["k"] = v``)."""
    return field.get_internal_type() in ("JSONField", "ArrayField", "HStoreField")


def transform_failed(
    transform: Transform, model: type[models.Model], pk: Any, error: BaseException
) -> TransformFailed:
    """The error for a transform that raised on row ``pk`` (its chunk rolls back)."""
    return TransformFailed(
        f"Transform {transform.name!r} raised on {model._meta.label} "
        f"pk={pk!r}: {type(error).__name__}: {error}",
        pk=pk,
        error=error,
    )


def no_key_lock(using: str) -> bool:
    """``FOR NO KEY UPDATE`` where there is one (PostgreSQL); MySQL locks ``FOR UPDATE``."""
    return bool(connections[using].features.has_select_for_no_key_update)


def key_range(chunk: PlannedChunk, model: type[models.Model] | None = None) -> Q:
    """The rows of ``chunk``; pass the ``model`` of a composite key (see ``keys.range_q``)."""
    if model is not None and keys.is_composite(model):
        return keys.range_q(model, chunk.lo, chunk.hi)
    if chunk.lo is None:
        return Q(pk__lte=chunk.hi)
    return Q(pk__gt=chunk.lo, pk__lte=chunk.hi)


def _plain(value: Any) -> Any:
    """A value as shown in previews and JSON (expressions as their repr)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def set_spec(values: Mapping[str, Any]) -> dict[str, Any]:
    """``--set`` values as a run's spec keeps them: they are part of the run's identity (another
    value is another backfill), and ``backfill_runs`` rebuilds the resume command from them.
    JSON values stay as they are (given back with ``--set-json``); dates, decimals and UUIDs
    become their text, which ``--set`` parses back; expressions are named under
    ``expressions``, since their text cannot be parsed back.
    """
    stored = {}
    for name, value in sorted(values.items()):
        if isinstance(value, (dict, list)):
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                value = str(value)
        else:
            value = _plain(value)
        stored[name] = value
    spec: dict[str, Any] = {"set": stored}
    expressions = sorted(n for n, v in values.items() if hasattr(v, "resolve_expression"))
    if expressions:
        spec["expressions"] = expressions
    return spec


def _sql(queryset: QuerySet[Any]) -> str:
    sql, params = queryset.query.sql_with_params()
    return _render(sql, params)


def _render(sql: str, params: Sequence[Any]) -> str:
    shown = [repr(p) if not isinstance(p, list) else f"<array of {len(p)}>" for p in params]
    try:
        return sql % tuple(shown)
    except (TypeError, ValueError):
        return f"{sql}  -- params: {shown}"


class UpdateStrategy:
    """SQL only: one ``UPDATE … WHERE key range [AND filter] AND value differs`` per chunk."""

    kind = "update"
    locks_rows = False

    def __init__(self, queryset: QuerySet[Any], values: Mapping[str, Any]) -> None:
        self.queryset = queryset
        self.values = dict(values)
        self.model = queryset.model
        differs = Q()
        for name, value in self.values.items():
            rhs = value if hasattr(value, "resolve_expression") else self._literal(name, value)
            differs |= Q(IsDistinctFrom(F(name), rhs))
        self.differs = differs
        self.guards = expression_guards(self.model, self.values)

    def _literal(self, name: str, value: Any) -> Value:
        return Value(value, output_field=self.model._meta.get_field(name))

    def _chunk_qs(self, chunk: PlannedChunk) -> QuerySet[Any]:
        return self.queryset.filter(key_range(chunk, self.model)).filter(self.differs)

    def process(self, chunk: PlannedChunk, *, lock: bool) -> ChunkWork:
        if self.guards:
            check_guards(self._chunk_qs(chunk), self.guards)
        return ChunkWork(None, self._chunk_qs(chunk).update(**self.values))

    def preview(self, chunk: PlannedChunk) -> list[PreviewRow]:
        names = list(self.values)
        new = {
            f"_backfill_new_{n}": v
            if isinstance(v, Expression) or hasattr(v, "resolve_expression")
            else self._literal(n, v)
            for n, v in self.values.items()
        }
        rows = (self._chunk_qs(chunk).order_by("pk").annotate(**new).values("pk", *names, *new))[
            :PREVIEW_ROWS
        ]
        return [
            PreviewRow(
                row["pk"],
                {n: row[n] for n in names},
                {n: row[f"_backfill_new_{n}"] for n in names},
            )
            for row in rows
        ]

    def describe(self, chunk: PlannedChunk | None) -> Description:
        spec = set_spec(self.values)
        statements = []
        if chunk is not None:
            qs = self._chunk_qs(chunk)
            query = cast(UpdateQuery, qs.query.chain(UpdateQuery))
            query.add_update_values(self.values)
            sql, params = query.get_compiler(qs.db).as_sql()
            statements.append(_render(sql, params))
        return Description(spec, statements)

    def notes(self) -> list[str]:
        return []


def _nothing(state: dict[str, Any]) -> tuple[()]:
    """The values of no attnames."""
    return ()


class IterateStrategy:
    """Model instances through the ORM; changed rows written in bulk, a statement per read batch
    (PostgreSQL, MySQL) or per chunk."""

    kind = "iterate"
    locks_rows = True

    def __init__(
        self, queryset: QuerySet[Any], transform: Transform, *, save: bool = False
    ) -> None:
        self.queryset = queryset
        self.transform = transform
        self.save = save
        self.model = queryset.model
        self.concrete = {f.attname: f for f in self.model._meta.concrete_fields}

    def _chunk_qs(self, chunk: PlannedChunk, lock: bool) -> QuerySet[Any]:
        qs = self.queryset.filter(key_range(chunk, self.model)).order_by("pk")
        return qs.select_for_update(no_key=no_key_lock(qs.db)) if lock else qs

    def _plain_model(self) -> bool:
        """Whether instances can be built without ``Model.__init__``: the model does not
        override ``__init__``/``from_db``, nothing listens to pre_init/post_init, and the
        queryset selects only the model's own columns.
        """
        model, query = self.model, self.queryset.query
        return (
            model.__init__ is models.Model.__init__
            and getattr(model.from_db, "__func__", None)
            is getattr(models.Model.from_db, "__func__", None)
            and not signals.pre_init.has_listeners(model)
            and not signals.post_init.has_listeners(model)
            and not query.select_related
            and not query.annotations
            and not query.extra
        )

    @contextmanager
    def _instances(
        self, chunk: PlannedChunk, lock: bool, writes: ChunkWrites | None
    ) -> Iterator[Iterator[models.Model]]:
        """The chunk's instances. For a plain model they are built the way ``from_db`` would
        (same ``__dict__``, same ``_state``) without the cost of ``Model.__init__`` per row,
        which dominates a backfill's Python time, from rows read ahead in batches
        (``backfill.reading``), each batch's changes written while the next is transformed
        (``writes``); otherwise Django builds them.
        """
        queryset = self._chunk_qs(chunk, lock)
        if not self._plain_model():
            yield queryset.iterator(chunk_size=FETCH_SIZE)
            return
        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, params = compiler.as_sql()
        with reading.batches(compiler.connection, sql, params, FETCH_SIZE) as batches:
            rows = batches if writes is None else writes.after(batches)
            yield self._build(compiler, rows, queryset.db)

    def _build(self, compiler: Any, batches: Iterable[Any], db: str) -> Iterator[models.Model]:
        rows = compiler.results_iter(results=batches)
        assert compiler.klass_info is not None
        fields = compiler.klass_info["select_fields"]
        start, end = fields[0], fields[-1] + 1
        names = [column[0].target.attname for column in compiler.select[start:end]]
        model, new, state = self.model, object.__new__, ModelState
        for row in rows:
            obj = new(model)
            obj.__dict__.update(zip(names, row[start:end], strict=True))
            obj._state = state()
            obj._state.adding = False
            obj._state.db = db
            yield obj

    def _loaded(
        self, obj: Any, key_attnames: set[str]
    ) -> tuple[list[str], Callable[[dict[str, Any]], Any], bool]:
        """From a chunk's first instance: the attnames it loaded (keys aside), a function taking
        their values out of an instance's ``__dict__``, and whether any may hold a mutable value
        (then the values before the transform are deep-copied)."""
        deferred = obj.get_deferred_fields()
        loaded = [a for a in self.concrete if a not in deferred and a not in key_attnames]
        snapshot: Callable[[dict[str, Any]], Any] = itemgetter(*loaded) if loaded else _nothing
        state = obj.__dict__
        # By type, not by the first row's values: its JSON may be text or null.
        mutable = any(
            holds_mutable(self.concrete[a]) or isinstance(state[a], (dict, list)) for a in loaded
        )
        return loaded, snapshot, mutable

    def _deferred_set(
        self,
        state: dict[str, Any],
        loaded: list[str],
        key_attnames: set[str],
        old: dict[str, Any],
        new: dict[str, Any],
    ) -> None:
        """The transform set a deferred field: a change, its old value unknown."""
        for a in self.concrete:
            if a in state and a not in loaded and a not in key_attnames and a not in new:
                new[a] = state[a]
                old[a] = "(not loaded)"

    def _scan(
        self,
        chunk: PlannedChunk,
        lock: bool,
        limit: int | None = None,
        *,
        writes: ChunkWrites | None = None,
    ) -> tuple[int, list[Any]]:
        """Run the transform over the chunk's instances: rows read, and ``(obj, pk, old, new)``
        per changed row (``new`` holds the changed attnames only), stopping after ``limit``;
        with ``writes``, ``(pk, new)`` goes there instead, to be written in bulk. The hot loop
        of the iterate strategy.
        """
        key_of = keys.row_key(self.model)
        key_attnames = {f.attname for f in keys.key_fields(self.model)}
        func = self.transform.func
        changes: list[Any] = writes.changes if writes is not None else []
        detail = writes is None
        loaded: list[str] = []
        snapshot: Callable[[dict[str, Any]], Any] = _nothing
        mutable = False
        read = 0
        pk = None
        try:
            with self._instances(chunk, lock, writes) as instances:
                for obj in instances:
                    state = obj.__dict__
                    if not read:
                        loaded, snapshot, mutable = self._loaded(obj, key_attnames)
                    read += 1
                    pk = key_of(state)
                    before = snapshot(state)
                    if mutable:
                        before = copy.deepcopy(before)
                    width = len(state)
                    if func(obj) is False:
                        continue
                    if key_of(state) != pk:
                        raise ValueError(
                            f"it changed the primary key to {key_of(state)!r}; chunks are "
                            "keyed on it, so a backfill never changes it"
                        )
                    if snapshot(state) == before and len(state) == width:
                        continue
                    # itemgetter gives a bare value for one name, a tuple for several or none.
                    old_values = before if len(loaded) != 1 else (before,)
                    old = {a: v for a, v in zip(loaded, old_values, strict=True) if state[a] != v}
                    new = {a: state[a] for a in old}
                    if len(state) != width:
                        self._deferred_set(state, loaded, key_attnames, old, new)
                    if new:
                        # The bulk path keeps only what it writes: less memory per chunk.
                        changes.append((obj, pk, old, new) if detail else (pk, new))
                        if limit is not None and len(changes) >= limit:
                            break
        except (DatabaseError, ChunkFailed, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # SystemExit and the like too: a transform never ends the process or the run.
            raise transform_failed(self.transform, self.model, pk, exc) from exc
        return read, changes

    def process(self, chunk: PlannedChunk, *, lock: bool) -> ChunkWork:
        if not self.save:
            writes = ChunkWrites(self.model, self.queryset.db, chunk)
            read, _ = self._scan(chunk, lock, writes=writes)
            return ChunkWork(read, writes.finish())
        read, changes = self._scan(chunk, lock)
        check_changes(
            self.model,
            connections[self.queryset.db],
            [(pk, new) for _o, pk, _d, new in changes],
        )
        for obj, _pk, _old, new in changes:
            obj.save(update_fields=[self.concrete[a].name for a in new], using=self.queryset.db)
        return ChunkWork(read, len(changes))

    def preview(self, chunk: PlannedChunk) -> list[PreviewRow]:
        _read, changes = self._scan(chunk, False, limit=PREVIEW_ROWS)
        rows = []
        for _obj, pk, old, new in changes:
            name = {a: self.concrete[a].name for a in new}
            rows.append(
                PreviewRow(
                    pk,
                    {name[a]: _plain(v) for a, v in old.items()},
                    {name[a]: _plain(v) for a, v in new.items()},
                )
            )
        return rows

    def describe(self, chunk: PlannedChunk | None) -> Description:
        spec: dict[str, Any] = {"transform": self.transform.name, "save": self.save}
        if self.transform.values is not None:
            spec.update(set_spec(self.transform.values))
        statements = []
        if chunk is not None:
            statements.append(_sql(self._chunk_qs(chunk, False)))
            statements.append(
                "then per chunk: "
                + (
                    "save(update_fields=…) per changed object"
                    if self.save
                    else "one bulk UPDATE of the changed rows and columns"
                )
            )
        return Description(spec, statements)

    def notes(self) -> list[str]:
        return []


class CursorStrategy:
    """Raw rows as dicts, streamed through a server-side cursor; no model instances."""

    kind = "cursor"
    locks_rows = True

    def __init__(
        self, queryset: QuerySet[Any], fields: Sequence[str], transform: Transform
    ) -> None:
        self.queryset = queryset
        self.transform = transform
        self.model = queryset.model
        opts = self.model._meta
        self.fields = [opts.get_field(name) for name in fields]
        self.keys = ["pk", *(f.attname for f in self.fields)]
        positions = {key: i for i, key in enumerate(self.keys) if i}
        self.mutable = [i for i, f in enumerate(self.fields, start=1) if holds_mutable(f)]
        # What a transform may return, by name or attname: the column it writes and where
        # the row holds its old value (None when the column was not read).
        self.slots: dict[str, tuple[str, int | None]] = {}
        key_fields = keys.key_fields(self.model)
        for f in opts.concrete_fields:
            if not f.primary_key and f not in key_fields:
                slot = (f.attname, positions.get(f.attname))
                self.slots[f.name] = self.slots[f.attname] = slot

    def _chunk_qs(self, chunk: PlannedChunk, lock: bool) -> QuerySet[Any]:
        qs = self.queryset.filter(key_range(chunk, self.model)).order_by("pk")
        if lock:
            # NO KEY: the key never changes, so inserts referencing these rows are not blocked.
            qs = qs.select_for_update(no_key=no_key_lock(qs.db))
        return qs.values_list("pk", *(f.attname for f in self.fields))

    @contextmanager
    def _rows(
        self, chunk: PlannedChunk, lock: bool, writes: ChunkWrites | None
    ) -> Iterator[Iterator[Sequence[Any]]]:
        """The chunk's rows as tuples, read ahead in batches (``backfill.reading``), each
        batch's changes written while the next is transformed (``writes``), with Django's
        converters only when a column has one (JSON, SQLite UUIDs…); no model instances.
        """
        compiler = self._chunk_qs(chunk, lock).query.get_compiler(using=self.queryset.db)
        sql, params = compiler.as_sql()
        converters = compiler.get_converters([column for column, _, _ in compiler.select])
        with reading.batches(compiler.connection, sql, params, FETCH_SIZE) as batches:
            read = batches if writes is None else writes.after(batches)
            rows: Iterator[Sequence[Any]] = itertools.chain.from_iterable(read)
            if converters:
                rows = compiler.apply_converters(rows, converters)
            width = len(keys.key_fields(self.model))
            if width > 1:
                # "pk" of a composite key selects its columns: hand the transform their tuple.
                rows = ((tuple(row[:width]), *row[width:]) for row in rows)
            yield rows

    def _scan(
        self,
        chunk: PlannedChunk,
        lock: bool,
        limit: int | None = None,
        *,
        writes: ChunkWrites | None = None,
    ) -> tuple[int, list[Any]]:
        """Run the transform over the chunk: rows read, and ``(pk, row, changes)`` per changed
        row (stopping after ``limit`` of them); with ``writes``, ``(pk, changes)`` goes there
        instead, to be written in bulk. The hot loop of the cursor strategy.
        """
        keys, slots, func, mutable = self.keys, self.slots, self.transform.func, self.mutable
        changes: list[Any] = writes.changes if writes is not None else []
        detail = writes is None
        append = changes.append
        read = 0
        values: Sequence[Any] = (None,)
        try:
            with self._rows(chunk, lock, writes) as rows:
                for values in rows:
                    read += 1
                    # Compare with the values as read, not with the row the transform may have
                    # changed in place (``row["data"]["k"] = v; return row``).
                    original = values
                    if mutable:
                        original = list(values)
                        for i in mutable:
                            original[i] = copy.deepcopy(values[i])
                    result = func(dict(zip(keys, values, strict=False)))
                    if not result:
                        continue
                    changed = {}
                    for key, value in result.items():
                        try:
                            attname, at = slots[key]
                        except KeyError:
                            raise KeyError(
                                f"returned {key!r}, which is not a writable column; return a "
                                "dict of field names to new values"
                            ) from None
                        if at is None or original[at] != value:
                            changed[attname] = value
                    if changed:
                        # The bulk path keeps exactly what it writes: (pk, changes).
                        append(
                            (values[0], dict(zip(keys, original, strict=True)), changed)
                            if detail
                            else (values[0], changed)
                        )
                        if limit is not None and len(changes) >= limit:
                            break
        except (DatabaseError, ChunkFailed, KeyboardInterrupt):
            raise
        except BaseException as exc:
            raise transform_failed(self.transform, self.model, values[0], exc) from exc
        return read, changes

    def process(self, chunk: PlannedChunk, *, lock: bool) -> ChunkWork:
        writes = ChunkWrites(self.model, self.queryset.db, chunk)
        read, _ = self._scan(chunk, lock, writes=writes)
        return ChunkWork(read, writes.finish())

    def preview(self, chunk: PlannedChunk) -> list[PreviewRow]:
        _read, changes = self._scan(chunk, False, limit=PREVIEW_ROWS)
        return [
            PreviewRow(
                pk,
                {a: _plain(row.get(a)) for a in changed},
                {a: _plain(v) for a, v in changed.items()},
            )
            for pk, row, changed in changes
        ]

    def describe(self, chunk: PlannedChunk | None) -> Description:
        spec: dict[str, Any] = {
            "transform": self.transform.name,
            "fields": [f.name for f in self.fields],
        }
        if self.transform.values is not None:
            spec.update(set_spec(self.transform.values))
        statements = []
        if chunk is not None:
            statements.append(_sql(self._chunk_qs(chunk, False)))
            statements.append("then per chunk: one bulk UPDATE of the changed rows and columns")
        return Description(spec, statements)

    def notes(self) -> list[str]:
        connection = connections[self.queryset.db]
        if connection.vendor != "postgresql":
            return [
                f"{connection.vendor}: rows are read with plain keyset queries "
                "(no server-side cursor)."
            ]
        if not reading.uses_server_side_cursor(connection):
            return [
                "DISABLE_SERVER_SIDE_CURSORS is set (pgbouncer in transaction mode?): each chunk "
                "is read with a plain keyset query instead of a server-side cursor."
            ]
        return ["Each chunk streams through a server-side cursor."]
