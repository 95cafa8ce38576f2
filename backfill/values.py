"""Turning ``--set F=V`` and ``--set-json F=JSON`` strings into validated field values."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, models

from backfill import schema
from backfill.columns import column_check
from backfill.exceptions import BadInput, reason_of

# Text columns take text: a JSON number or list is not silently written as its repr.
STRICT_TEXT = (models.CharField, models.TextField, models.SlugField)
TRUE_WORDS = {"true", "yes", "on", "1", "t", "y"}
FALSE_WORDS = {"false", "no", "off", "0", "f", "n"}


def parse_bool(text: str, *, what: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise BadInput(f"{what}: {text!r} is not a boolean. Use true or false (or yes/no).")


def split_assignment(text: str, *, option: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise BadInput(
            f"{option} {text!r} is not of the form FIELD=VALUE. "
            f'Write it like {option} author="Me, myself, and I".'
        )
    return name.strip(), value


def clean_value(field: models.Field[Any, Any], value: Any, *, option: str, raw: str) -> Any:
    """Convert and validate ``value`` the way the field would, without touching the database."""
    if value is None:
        if not field.null:
            raise BadInput(
                f"{option} {raw!r}: {field.name} is NOT NULL and cannot be set to null. "
                "Pass a value, or make the field nullable first."
            )
        return None
    if isinstance(field, models.IntegerField) and (
        isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
    ):
        # int() would make 5.5 into 5 and true into 1 without a word.
        raise BadInput(
            f"{option} {raw!r}: {field.model._meta.label}.{field.name} holds whole numbers; "
            f"{value!r} is not one. Pass a whole number."
        )
    try:
        if isinstance(field, models.BooleanField) and isinstance(value, str):
            value = parse_bool(value, what=f"{option} {raw!r}")
        if type(field) in STRICT_TEXT and not isinstance(value, str):
            raise ValidationError(f"{value!r} is not text; quote it as a JSON string.")
        value = field.to_python(value)
        if value is None and not field.null:
            # to_python turns "" into None for some fields (dates, JSON, ...).
            raise ValidationError(f"{field.name} is NOT NULL and cannot be set to null.")
        field.run_validators(value)
        if field.choices and value not in {c for c, _ in field.flatchoices}:
            raise ValidationError(f"{value!r} is not one of the field's choices")
    except (ValidationError, OverflowError, ValueError, TypeError) as exc:
        reason = reason_of(exc) if isinstance(exc, ValidationError) else f"{reason_of(exc)}."
        raise BadInput(
            f"{option} {raw!r}: {field.model._meta.label}.{field.name} rejects the value: "
            f"{reason} Pass a value the field accepts."
        ) from None
    if isinstance(field, models.CharField) and field.max_length and len(value) > field.max_length:
        raise BadInput(
            f"{option} {raw!r}: the value is {len(value)} characters but "
            f"{field.model._meta.label}.{field.name} holds at most {field.max_length}. "
            "Pass a shorter value."
        )
    # What the column will store, as every written value is checked (backfill.columns).
    problem = column_check(field, connection)(value)
    if problem:
        raise BadInput(
            f"{option} {raw!r}: the value {problem}, so "
            f"{field.model._meta.label}.{field.name} cannot hold it as given. Pass another value."
        )
    return value


def parse_set(
    model: type[models.Model],
    set_args: Iterable[str] = (),
    json_args: Iterable[str] = (),
) -> dict[str, Any]:
    """``["author=anon"]`` and ``['views=0']`` to ``{"author": "anon", "views": 0}``."""
    values: dict[str, Any] = {}
    for raw in set_args:
        name, text = split_assignment(raw, option="--set")
        field = schema.writable_field(model, name, purpose="--set")
        values[field.name] = clean_value(field, text, option="--set", raw=raw)
    for raw in json_args:
        name, text = split_assignment(raw, option="--set-json")
        field = schema.writable_field(model, name, purpose="--set-json")
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(
                f"--set-json {raw!r}: {text!r} is not JSON ({exc.msg}). "
                "Quote strings: --set-json name='\"text\"', or use null, numbers, [..], {..}."
            ) from None
        if isinstance(field, models.JSONField):
            values[field.name] = decoded
        else:
            values[field.name] = clean_value(field, decoded, option="--set-json", raw=raw)
    return values


def validate_mapping(model: type[models.Model], mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The Python API's ``set={...}``: same checks as ``--set``, values kept as given."""
    cleaned: dict[str, Any] = {}
    for name, value in mapping.items():
        field = schema.writable_field(model, name, purpose="set")
        if hasattr(value, "resolve_expression") or isinstance(field, models.JSONField):
            cleaned[field.name] = value
        else:
            cleaned[field.name] = clean_value(field, value, option="set", raw=f"{name}={value!r}")
    return cleaned
