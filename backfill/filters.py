"""``--filter`` / ``--exclude`` in Django lookup syntax, checked against the model up front."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import EmptyResultSet, FieldDoesNotExist, FieldError, ValidationError
from django.db import DEFAULT_DB_ALIAS, models
from django.db.models import Q

from backfill import schema
from backfill.columns import integer_range
from backfill.exceptions import BadInput, reason_of
from backfill.values import parse_bool, split_assignment

LIST_LOOKUPS = {"in", "range"}
RANGE_CHECKED = {"", "exact", "gt", "gte", "lt", "lte", "in", "range"}


def _target(model: type[models.Model], lookup: str) -> tuple[models.Field[Any, Any] | None, str]:
    """The field a lookup path ends on and the lookup applied to it (``""`` for exact)."""
    field: Any = None
    current: Any = model
    parts = lookup.split("__")
    for i, part in enumerate(parts):
        if current is None:
            return field, "__".join(parts[i:])
        try:
            field = current._meta.get_field(part)
        except FieldDoesNotExist:
            # Not a field: a lookup or transform, or a typo that _check reports.
            return field, "__".join(parts[i:])
        current = field.related_model if field.is_relation else None
    return field, ""


def _check_range(field: models.Field[Any, Any], texts: list[str], *, option: str, raw: str) -> None:
    """Whole numbers a column of this field could hold: a bigger one is refused on every
    backend alike (SQLite cannot even bind it; PostgreSQL would compare it as numeric).
    """
    bounds = integer_range(field)
    for text in texts:
        try:
            number = int(text)
        except ValueError:
            continue  # not a whole number: Django's conversion says so
        if bounds and not bounds[0] <= number <= bounds[1]:
            raise BadInput(
                f"{option} {raw!r}: {number} is outside the range of {field.name} "
                f"({bounds[0]}..{bounds[1]}). Pass a value the column can hold."
            )


def _convert(model: type[models.Model], lookup: str, text: str, *, option: str, raw: str) -> Any:
    field, last = _target(model, lookup)
    if last == "isnull":
        return parse_bool(text, what=f"{option} {raw!r}")
    items: list[str] | None = None
    if last in LIST_LOOKUPS:
        items = [item.strip() for item in text.split(",")]
        if last == "range" and len(items) != 2:
            raise BadInput(f"{option} {raw!r}: __range takes two values, e.g. id__range=1,500.")
    if isinstance(field, models.IntegerField) and last in RANGE_CHECKED:
        _check_range(field, items if items is not None else [text], option=option, raw=raw)
    if isinstance(field, models.BooleanField) and last in ("", "exact", "in"):
        # The same words --set takes (true/false/yes/no, any case); Django alone knows only a few.
        if items is not None:
            return [parse_bool(item, what=f"{option} {raw!r}") for item in items]
        return parse_bool(text, what=f"{option} {raw!r}")
    return items if items is not None else text


def parse_filters(
    model: type[models.Model],
    filters: Iterable[str] = (),
    excludes: Iterable[str] = (),
    *,
    using: str = DEFAULT_DB_ALIAS,
) -> Q:
    """Combine ``--filter`` and ``--exclude`` strings into one ``Q``, validated on ``model``.

    Raises BadInput naming the option when a lookup or value does not fit the model.
    """
    combined = Q()
    for option, items, negate in (("--filter", filters, False), ("--exclude", excludes, True)):
        for raw in items:
            lookup, text = split_assignment(raw, option=option)
            q = Q(**{lookup: _convert(model, lookup, text, option=option, raw=raw)})
            _check(model, q, option=option, raw=raw, using=using)
            combined &= ~q if negate else q
    return combined


def _check(model: type[models.Model], q: Q, *, option: str, raw: str, using: str) -> None:
    try:
        # Compiling the WHERE clause for the run's database resolves every lookup and converts
        # every value, as the first chunk would.
        query = model._base_manager.using(using).filter(q).query
        query.get_compiler(using=using).as_sql()
    except EmptyResultSet:
        return
    except FieldError as exc:
        first = raw.partition("=")[0].strip().split("__")[0]
        names = [f.name for f in model._meta.get_fields()]
        if first not in (*names, "pk"):
            raise BadInput(
                f"{option} {raw!r}: unknown field {first!r} on {model._meta.label}."
                f"{schema.suggest(first, names)} Fields: {', '.join(sorted(names))}."
            ) from None
        raise BadInput(
            f"{option} {raw!r}: {exc} Use Django lookup syntax, e.g. author__isnull=true."
        ) from None
    except (ValueError, TypeError, ValidationError) as exc:
        raise BadInput(
            f"{option} {raw!r}: {reason_of(exc)} Pass a value of the field's type."
        ) from None
