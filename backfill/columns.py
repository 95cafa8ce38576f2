"""Checking every value a backfill writes as its column will store it, before it is written.

A backend may change a value on its way into a column without a word: PostgreSQL cuts a string
cast to ``varchar(60)`` (and, on assignment, trailing spaces past the limit), rounds a decimal
to the column's scale; SQLite stores 100 characters in a ``varchar(60)`` and a 64-bit number in
an ``integer``. A backfill must never change a value nobody asked for, so the value is checked
here, by the same rules on every backend, and a value the column cannot hold as given fails its
chunk, naming the row:

- NULL in a NOT NULL column;
- text with a NUL character or a lone surrogate (not valid UTF-8), or longer than ``max_length``;
- an integer outside the field's range (PostgreSQL's, the portable one, also on SQLite);
- a float that is NaN or infinite; a decimal with more digits or places than the column keeps;
- JSON that does not encode as strict JSON in valid UTF-8 (NaN, NUL, lone surrogates);
- anything else the field itself refuses to prepare for the database.

The checks run per column over a whole batch at C speed (``max(map(len, …))``, one ``join``);
only a batch with a problem is walked row by row to name the first offending row.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from operator import itemgetter
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Q, QuerySet, Value
from django.db.models.functions import Length

from backfill.bulk import UNKNOWN, Unknown, uniform_names
from backfill.exceptions import ValueRejected, reason_of

# Text the database cannot store as given: a NUL, or half of a surrogate pair.
BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
TEXT_TYPES = (models.CharField, models.TextField)
INTEGER_RANGES = BaseDatabaseOperations.integer_field_ranges
FLOAT_MAX = 1.7976931348623157e308

Check = Callable[[Any], "str | None"]

# Exact field classes and the Python types they store without converting: a transform that
# gives another type (5.5 for an IntegerField, a list for a CharField) would have it changed
# by the field's conversion (int(5.5) is 5, str([1]) is "[1]"), so it is refused instead.
# Subclasses (an encrypted or enum field) prepare values their own way and are not listed.
STRICT_TYPES: dict[type[models.Field[Any, Any]], tuple[type, ...]] = {
    **{kind: (str,) for kind in (models.CharField, models.TextField, models.SlugField)},
    **{kind: (str,) for kind in (models.EmailField, models.URLField)},
    **{
        kind: (int,)
        for kind in (
            models.IntegerField,
            models.BigIntegerField,
            models.SmallIntegerField,
            models.PositiveIntegerField,
            models.PositiveBigIntegerField,
            models.PositiveSmallIntegerField,
        )
    },
    models.BooleanField: (bool,),
    models.FloatField: (int, float),
    models.DecimalField: (Decimal, int),
}


def shown(value: Any, limit: int = 40) -> str:
    """A value as a message quotes it: its repr, cut in the middle of long text."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}…{text[-10:]}"


def text_problem(value: str) -> str | None:
    """Why ``value`` is not text a database stores as given, or None."""
    found = BAD_TEXT.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return f"contains a NUL character at position {found.start()}"
    return f"contains a lone surrogate {char!r} at position {found.start()} (not valid UTF-8)"


def integer_range(field: models.Field[Any, Any]) -> tuple[int, int] | None:
    """The field's integer range, the same on every backend (PostgreSQL's column types)."""
    kind = field.get_internal_type()
    if kind in ("AutoField", "BigAutoField", "SmallAutoField"):
        kind = kind.replace("Auto", "Integer")
    bounds = INTEGER_RANGES.get(kind)
    if bounds is None and isinstance(field, models.IntegerField):
        bounds = INTEGER_RANGES["BigIntegerField"]
    return bounds


def _decimal_problem(field: models.DecimalField[Any, Any], value: Decimal) -> str | None:
    if not value.is_finite():
        return "is not a finite number"
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    places = max(0, -exponent)
    if field.decimal_places is not None and places > field.decimal_places:
        try:
            rounded = value != value.quantize(Decimal(1).scaleb(-field.decimal_places))
        except ArithmeticError:
            rounded = True
        if rounded:
            return (
                f"has {places} decimal places but the column keeps {field.decimal_places} "
                "(it would be rounded)"
            )
    whole = max(0, len(digits) + exponent)
    if (
        field.max_digits is not None
        and field.decimal_places is not None
        and value
        and whole > field.max_digits - field.decimal_places
    ):
        return (
            f"has {whole} digits before the point but the column keeps "
            f"{field.max_digits - field.decimal_places}"
        )
    return None


def _json_problem(field: models.JSONField, value: Any) -> str | None:
    try:
        text = json.dumps(value, cls=field.encoder, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        # UnicodeEncodeError is a ValueError: a lone surrogate somewhere inside.
        return f"is not strict JSON in valid UTF-8 ({exc})"
    if "\\u0000" in text:
        return "contains a NUL character (\\u0000), which PostgreSQL's jsonb refuses"
    return None


def column_check(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> Check:
    """A function returning why a value cannot be written to ``field`` as given, or None."""
    max_length = field.max_length if isinstance(field, models.CharField) else None
    bounds = integer_range(field) if isinstance(field, models.IntegerField) else None
    nullable = field.null
    strict = STRICT_TYPES.get(type(field))

    def check(value: Any) -> str | None:
        if value is None:
            return None if nullable else "is NULL but the column is NOT NULL"
        if hasattr(value, "resolve_expression"):
            return None  # an expression, checked in SQL (see expression_guards)
        if strict is not None and (
            not isinstance(value, strict) or (isinstance(value, bool) and bool not in strict)
        ):
            wanted = " or ".join(kind.__name__ for kind in strict)
            return (
                f"is a {type(value).__name__}, not a {wanted}, and {type(field).__name__} "
                "would convert it"
            )
        if isinstance(field, TEXT_TYPES) and isinstance(value, str):
            problem = text_problem(value)
            if problem:
                return problem
            if max_length is not None and len(value) > max_length:
                return f"is {len(value)} characters but the column holds at most {max_length}"
            return None
        if isinstance(field, models.JSONField):
            return _json_problem(field, value)
        if bounds is not None and type(value) is int:
            if not bounds[0] <= value <= bounds[1]:
                return f"is outside the column's range {bounds[0]}..{bounds[1]}"
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return "is not a finite number"
        if isinstance(field, models.DecimalField) and isinstance(value, Decimal):
            return _decimal_problem(field, value)
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                return problem
        try:
            prepared = field.get_db_prep_save(value, connection)
        except (ValidationError, ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            return f"cannot be stored in a {type(field).__name__} ({reason_of(exc)})"
        return _prepared_problem(field, prepared, bounds)

    return check


def _prepared_problem(
    field: models.Field[Any, Any], prepared: Any, bounds: tuple[int, int] | None
) -> str | None:
    """Why a value as the field prepared it for the database cannot be stored, or None."""
    if isinstance(field, models.DecimalField) and isinstance(prepared, Decimal):
        return _decimal_problem(field, prepared)
    if isinstance(prepared, float) and not math.isfinite(prepared):
        return "is not a finite number"
    if bounds is not None and isinstance(prepared, int) and not bounds[0] <= prepared <= bounds[1]:
        return f"is outside the column's range {bounds[0]}..{bounds[1]}"
    if isinstance(prepared, str):
        return text_problem(prepared)
    return None


def _batch_clean(field: models.Field[Any, Any], values: Sequence[Any]) -> bool:
    """Whether a whole batch of values is known good without a per-value walk."""
    if not values:
        return True
    kind = type(values[0])
    if isinstance(field, TEXT_TYPES) and kind is str:
        try:
            joined = "".join(values)
        except TypeError:  # a None or a non-str among them
            return False
        if not joined.isascii() or "\x00" in joined:
            return False if BAD_TEXT.search(joined) else _lengths_fit(field, values)
        return _lengths_fit(field, values)
    if isinstance(field, models.IntegerField) and kind is int:
        bounds = integer_range(field)
        if bounds is None or not all(type(v) is int for v in values):
            return False
        return bool(bounds[0] <= min(values) and max(values) <= bounds[1])
    return False


def _lengths_fit(field: models.Field[Any, Any], values: Sequence[str]) -> bool:
    max_length = field.max_length if isinstance(field, models.CharField) else None
    return max_length is None or bool(max(map(len, values)) <= max_length)


def check_changes(
    model: type[models.Model],
    connection: BaseDatabaseWrapper,
    changes: Sequence[tuple[Any, dict[str, Any]]],
    names: tuple[str, ...] | Unknown | None = UNKNOWN,
) -> None:
    """Raise ValueRejected for the first ``(pk, {attname: value})`` a column cannot hold.
    ``names``: ``uniform_names(changes)`` when the caller has it already."""
    if not changes:
        return
    fields = {f.attname: f for f in model._meta.concrete_fields}
    if isinstance(names, Unknown):
        names = uniform_names(changes)
    dicts = list(map(itemgetter(1), changes)) if names is not None else []
    changed = names if names is not None else dict.fromkeys(a for _, v in changes for a in v)
    for attname in changed:
        field = fields[attname]
        if names is not None:
            column = list(map(itemgetter(attname), dicts))  # every row has it
        else:
            column = [values[attname] for _, values in changes if attname in values]
        if _batch_clean(field, column):
            continue
        check = column_check(field, connection)
        for pk, values in changes:
            if attname in values:
                problem = check(values[attname])
                if problem:
                    raise rejected(model, pk, field, values[attname], problem)


@dataclass(frozen=True)
class Guard:
    """A check of an expression's result in SQL, run on a chunk's rows before its UPDATE."""

    field: models.Field[Any, Any]
    measure: Any  # the expression, or its Length for text
    refused: Q  # on the annotation ``_backfill_check``
    problem: str  # worded for the value found, e.g. "would be {} characters …"


def expression_guards(model: type[models.Model], values: dict[str, Any]) -> list[Guard]:
    """Checks for the ``set=`` expressions whose results a column may not hold as given.

    SQLite stores any length and any 64-bit (or float) number in any column, and PostgreSQL
    cuts trailing spaces that overflow a ``varchar``: each such expression's result is
    measured on the chunk's rows before it is written.
    """
    guards = []
    check = "_backfill_check"
    for name, value in values.items():
        if not hasattr(value, "resolve_expression") or isinstance(value, Value):
            continue
        field = model._meta.get_field(name)
        assert isinstance(field, models.Field)
        if isinstance(field, models.CharField) and field.max_length:
            guards.append(
                Guard(
                    field,
                    Length(value),
                    Q(**{f"{check}__gt": field.max_length}),
                    f"would be {{}} characters but the column holds at most {field.max_length}",
                )
            )
        elif isinstance(field, models.IntegerField) and (bounds := integer_range(field)):
            guards.append(
                Guard(
                    field,
                    value,
                    Q(**{f"{check}__lt": bounds[0]}) | Q(**{f"{check}__gt": bounds[1]}),
                    f"would be {{}}, outside the column's range {bounds[0]}..{bounds[1]}",
                )
            )
        elif isinstance(field, models.FloatField):
            guards.append(
                Guard(
                    field,
                    value,
                    Q(**{f"{check}__lt": -FLOAT_MAX}) | Q(**{f"{check}__gt": FLOAT_MAX}),
                    "would be {}, not a finite number",
                )
            )
    return guards


def check_guards(queryset: QuerySet[Any], guards: Sequence[Guard]) -> None:
    """Raise ValueRejected for the first row of ``queryset`` an expression's result does not
    fit (one query per guard, bounded by the chunk's keys).
    """
    for guard in guards:
        found = (
            queryset.annotate(_backfill_check=guard.measure)
            .filter(guard.refused)
            .order_by("pk")
            .values_list("pk", "_backfill_check")
            .first()
        )
        if found is not None:
            pk, measured = found
            model = queryset.model
            raise ValueRejected(
                f"{model._meta.label} pk={pk!r}: the new {guard.field.name} "
                f"{guard.problem.format(measured)}. Nothing was changed in the database to fit "
                "it",
                pk=pk,
                field=guard.field.name,
            )


def rejected(
    model: type[models.Model], pk: Any, field: models.Field[Any, Any], value: Any, problem: str
) -> ValueRejected:
    return ValueRejected(
        f"{model._meta.label} pk={pk!r}: the new {field.name} {shown(value)} {problem}. "
        "Nothing was changed in the database to fit it",
        pk=pk,
        field=field.name,
    )
