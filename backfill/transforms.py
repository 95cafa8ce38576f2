"""Finding the Python transform a run applies: a dotted path, a registered name, or ``--set``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import models

from backfill import registry, schema
from backfill.exceptions import BadInput


@dataclass(frozen=True)
class Transform:
    """A callable plus what identifies it in a run: its name and, for ``--set``, the values."""

    func: Callable[[Any], Any]
    name: str
    values: Mapping[str, Any] | None = None


def import_path(path: str) -> Callable[..., Any]:
    """``pkg.module.func`` or ``pkg.module:func`` to the callable; BadInput when it is not one."""
    if ":" in path:
        module_path, _, attr_path = path.partition(":")
    else:
        module_path, _, attr_path = path.rpartition(".")
    if not module_path or not attr_path:
        raise BadInput(
            f"--transform {path!r} is not a dotted path. "
            "Pass pkg.module.func or pkg.module:func, or the name of a registered transform."
        )
    try:
        target: Any = importlib.import_module(module_path)
    except ImportError as exc:
        raise BadInput(
            f"--transform {path!r}: cannot import {module_path!r} ({exc}). "
            "Check the module path and that it is on sys.path."
        ) from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise BadInput(
                f"--transform {path!r}: {module_path!r} has no attribute {part!r}. "
                "Check the function name."
            ) from None
    if not callable(target):
        raise BadInput(
            f"--transform {path!r} is a {type(target).__name__}, not a callable. "
            "Point it at a function."
        )
    return target  # type: ignore[no-any-return]


def _listing(found: list[registry.RegisteredTransform]) -> str:
    return ", ".join(f"{t.name} ({t.path})" for t in found) or "none"


def resolve(
    model: type[models.Model], transform: str | Callable[..., Any] | None, *, rows: bool
) -> Transform:
    """The transform to run: a callable, a registered name, a dotted path, or the only one."""
    kind = "row" if rows else "instance"
    model_label = schema.label(model)
    if callable(transform):
        return Transform(transform, f"{transform.__module__}.{transform.__qualname__}")
    candidates = registry.registered(model, rows=rows)
    if transform is None:
        if len(candidates) == 1:
            return Transform(candidates[0].func, candidates[0].name)
        if not candidates:
            raise BadInput(
                f"No --set and no --transform given, and {model_label} has no registered {kind} "
                f"transform. Pass --set F=V or --transform pkg.module.func, or register one with "
                f'@backfill.register("{model_label}"{", rows=True" if rows else ""}) in '
                f"<app>/backfills.py."
            )
        raise BadInput(
            f"No --transform given and {model_label} has {len(candidates)} registered {kind} "
            f"transforms: {_listing(candidates)}. Pick one with --transform NAME."
        )
    by_name = {t.name: t for t in candidates}
    if transform in by_name:
        return Transform(by_name[transform].func, transform)
    if "." not in transform and ":" not in transform:
        others = registry.registered(model, rows=not rows)
        hint = ""
        if transform in {t.name for t in others}:
            hint = (
                f" {transform!r} is registered as a {'instance' if rows else 'row'} transform; "
                f"use {'backfill_iterate' if rows else 'backfill_cursor'} for it."
            )
        raise BadInput(
            f"--transform {transform!r} is not a registered {kind} transform of {model_label}."
            f"{hint} Registered: {_listing(candidates)}. Or pass a dotted path pkg.module.func."
        )
    return Transform(import_path(transform), transform)


def _no_expressions(values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if hasattr(value, "resolve_expression"):
            raise BadInput(
                f"set={{{name!r}: {value!r}}}: an expression runs in SQL, so it needs "
                "backfill.update() (backfill_update --set-expr); iterate and cursor take values."
            )


def _set_name(values: Mapping[str, Any]) -> str:
    """``set a,b``: in name order, so the order of the options does not make another run."""
    return "set " + ",".join(sorted(values))


def instance_setter(values: Mapping[str, Any], model: type[models.Model]) -> Transform:
    """``--set`` for iterate: assign each value to the instance."""
    _no_expressions(values)
    attnames = [
        (schema.column_field(model, n, purpose="--set").attname, v) for n, v in values.items()
    ]
    return Transform(partial(_set_fields, attnames), _set_name(values), dict(values))


# Module-level functions bound with partial, not closures: a worker process that starts
# clean (forkserver, spawn) gets its transform pickled.
def _set_fields(attnames: list[tuple[str, Any]], obj: models.Model) -> None:
    for attname, value in attnames:
        setattr(obj, attname, value)


def _set_row(changes: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    return changes


def row_setter(values: Mapping[str, Any], model: type[models.Model]) -> Transform:
    """``--set`` for cursor: the same values as a dict of changes."""
    _no_expressions(values)
    changes = {schema.column_field(model, n, purpose="--set").attname: v for n, v in values.items()}
    return Transform(partial(_set_row, changes), _set_name(values), dict(values))
