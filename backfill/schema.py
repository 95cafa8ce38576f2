"""Finding the model and fields a backfill names, with helpful errors for typos."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.db import models

from backfill import keys
from backfill.exceptions import BadInput


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'author'?`` for a close match, else ``""``."""
    return did_you_mean(difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6))


def did_you_mean(names: list[str]) -> str:
    """`` Did you mean 'a' or 'b'?`` for the names offered, else ``""``."""
    if not names:
        return ""
    return " Did you mean " + " or ".join(repr(n) for n in names) + "?"


def resolve_model(path: str) -> type[models.Model]:
    """``"blog.BlogPost"`` (case-insensitive) to the model class; BadInput with suggestions."""
    if path.count(".") != 1:
        raise BadInput(
            f"Model {path!r} is not of the form app_label.ModelName. Pass it like blog.BlogPost."
        )
    app_label, model_name = path.split(".")
    try:
        app_config = apps.get_app_config(app_label)
    except LookupError:
        labels = [c.label for c in apps.get_app_configs()]
        raise BadInput(
            f"Unknown app {app_label!r} in {path!r}.{suggest(app_label, labels)} "
            f"Installed apps with models: {', '.join(sorted(labels))}."
        ) from None
    try:
        return app_config.get_model(model_name)
    except LookupError:
        names = [m.__name__ for m in app_config.get_models()]
        hint = suggest(model_name, names) or f" Models in {app_label}: {', '.join(names)}."
        raise BadInput(f"Unknown model {path!r}.{hint}") from None


def label(model: type[models.Model]) -> str:
    return str(model._meta.label)


def writable_field(model: type[models.Model], name: str, *, purpose: str) -> models.Field[Any, Any]:
    """A concrete, non-pk column of ``model`` that a backfill may write."""
    field = column_field(model, name, purpose=purpose)
    if not field.primary_key and field in keys.key_fields(model):
        raise BadInput(
            f"{purpose} {name!r} is part of the composite primary key of {label(model)}; chunks "
            "are keyed on it, so it cannot be changed by a backfill. Set another field."
        )
    if field.primary_key:
        raise BadInput(
            f"{purpose} {name!r} is the primary key of {label(model)}; chunks are keyed on it, so "
            "it cannot be changed by a backfill. Set another field."
        )
    if getattr(field, "generated", False):
        raise BadInput(
            f"{purpose} {name!r} on {label(model)} is a generated column; it cannot be set."
        )
    return field


def column_field(model: type[models.Model], name: str, *, purpose: str) -> models.Field[Any, Any]:
    """A concrete column of ``model`` by name or attname (``author`` or ``author_id``)."""
    opts = model._meta
    for field in opts.concrete_fields:
        if name in (field.name, field.attname):
            return field
    try:
        other = opts.get_field(name)
    except Exception:
        names = [f.name for f in opts.concrete_fields]
        raise BadInput(
            f"Unknown field {name!r} on {label(model)} ({purpose}).{suggest(name, names)} "
            f"Fields: {', '.join(names)}."
        ) from None
    raise BadInput(
        f"Field {name!r} on {label(model)} is not a concrete column "
        f"({type(other).__name__}: many-to-many or reverse relation) and cannot be used in "
        f"{purpose}. Use one of: {', '.join(f.name for f in opts.concrete_fields)}."
    )


def field_list(model: type[models.Model], value: str | Iterable[str], *, purpose: str) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` to validated field names."""
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    if not names:
        raise BadInput(f"{purpose} needs at least one field name, e.g. {purpose} author.")
    return [column_field(model, n, purpose=purpose).name for n in names]
