"""A backfill described by data alone, so it can be rebuilt later, in another process.

A deferred ``RunBackfill`` stores its backfill as a recipe in the run's ``recipe`` column (JSON):
the model label, the strategy, the values it sets (Django expressions by their deconstruction),
the transform as a dotted path or a registered name, the filters as lookups, the columns read,
the "needs backfill" lookup of the verification, and the run options. ``backfill_pending`` and
``backfill_verify`` rebuild it against the *current* model from the real app registry, not the
migration's historical model: a transform written for a migration receives a real instance.

Only what can be rebuilt is accepted: values that JSON holds, expressions and fields from
``django.db.models`` (or ``django.contrib.postgres``), ``Q`` objects, and transforms importable
by their path. Anything else is refused when the operation is built or recorded, never later.
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import EmptyResultSet, FieldError
from django.db import models
from django.db.models import Q, QuerySet

from backfill import api, schema
from backfill.exceptions import BadInput
from backfill.result import Result

VERSION = 1
# Expressions and fields are rebuilt by importing their class: only from these packages.
ALLOWED_MODULES = ("django.db.models.", "django.contrib.postgres.")
TEXT_TYPES = (decimal.Decimal, datetime.date, datetime.time, datetime.timedelta, uuid.UUID)

Lookups = Mapping[str, Any] | Q


def to_data(value: Any, *, what: str = "value") -> Any:
    """``value`` as JSON-ready data that ``from_data`` turns back into an equal value.

    Raises ValueError for a value that cannot be stored (an object, a lambda, an expression
    from outside Django).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Q):
        children = [_q_child(child, what) for child in value.children]
        return {"$q": children, "connector": value.connector, "negated": value.negated}
    if isinstance(value, models.Field):
        _name, path, args, kwargs = value.deconstruct()
        return {"$field": _allowed(path, what), **_arguments(args, kwargs, what)}
    if hasattr(value, "resolve_expression") and hasattr(value, "deconstruct"):
        path, args, kwargs = value.deconstruct()
        return {"$expr": _allowed(path, what), **_arguments(args, kwargs, what)}
    if isinstance(value, (list, tuple)):
        return [to_data(item, what=what) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"$dict": {key: to_data(item, what=what) for key, item in value.items()}}
    if isinstance(value, TEXT_TYPES):
        # The field converts its text back (to_python) when the recipe is rebuilt.
        return {"$text": str(value)}
    raise ValueError(
        f"{what}: {value!r} ({type(value).__name__}) cannot be stored as data for a deferred "
        "run. Use JSON values, Django expressions and Q objects, or defer=False."
    )


def _q_child(child: Any, what: str) -> Any:
    """A Q's child: a nested Q, or a ``(lookup, value)`` pair."""
    if isinstance(child, tuple):
        return [child[0], to_data(child[1], what=what)]
    return to_data(child, what=what)


def _arguments(args: Sequence[Any], kwargs: Mapping[str, Any], what: str) -> dict[str, Any]:
    return {
        "args": [to_data(arg, what=what) for arg in args],
        "kwargs": {key: to_data(arg, what=what) for key, arg in kwargs.items()},
    }


def _allowed(path: str, what: str) -> str:
    if not path.startswith(ALLOWED_MODULES):
        raise ValueError(
            f"{what}: {path} is not a Django expression or field, so a deferred run cannot "
            "store it. Use expressions from django.db.models, or defer=False."
        )
    return path


def from_data(data: Any) -> Any:
    """The value ``to_data`` stored. Raises BadInput for data it did not write."""
    if isinstance(data, list):
        return [from_data(item) for item in data]
    if not isinstance(data, dict):
        return data
    if "$q" in data:
        children = [
            (child[0], from_data(child[1])) if isinstance(child, list) else from_data(child)
            for child in data["$q"]
        ]
        return Q(*children, _connector=data["connector"], _negated=data["negated"])
    if "$dict" in data:
        return {key: from_data(item) for key, item in data["$dict"].items()}
    if "$text" in data:
        return data["$text"]
    for tag in ("$expr", "$field"):
        if tag in data:
            cls = _import(data[tag])
            args = [from_data(arg) for arg in data.get("args", [])]
            kwargs = {key: from_data(arg) for key, arg in data.get("kwargs", {}).items()}
            return cls(*args, **kwargs)
    raise BadInput(f"A stored recipe holds {data!r}, which backfill did not write.")


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    if not path.startswith(ALLOWED_MODULES):
        raise BadInput(f"A stored recipe names {path!r}, which is not a Django expression.")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise BadInput(
            f"A stored recipe names {path!r}, which this Django does not have."
        ) from None
    if not isinstance(found, type):
        raise BadInput(f"A stored recipe names {path!r}, which is not a class.")
    return found


def transform_name(transform: Any) -> str:
    """A transform as the recipe keeps it: a dotted path or a registered name.

    Raises ValueError for a callable that cannot be found again by its path (a lambda, a
    function defined inside another one).
    """
    if isinstance(transform, str):
        return transform
    module = getattr(transform, "__module__", None)
    qualname = getattr(transform, "__qualname__", None)
    if not module or not qualname or "<" in qualname or "." in qualname:
        raise ValueError(
            f"transform={transform!r} cannot be found again by its path, so a deferred run "
            "cannot store it. Define it at the top level of a module (the migration's own "
            "module will do), or register it in <app>/backfills.py."
        )
    return f"{module}.{qualname}"


def as_q(lookups: Lookups) -> Q:
    return lookups if isinstance(lookups, Q) else Q(**lookups)


def build(
    *,
    model_label: str,
    strategy: str,
    set: Mapping[str, Any] | None,
    transform: Any,
    fields: Sequence[str] | None,
    filter: Lookups | None,
    exclude: Lookups | None,
    needs: Lookups | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The recipe of a backfill. Raises ValueError for a part that cannot be stored."""
    recipe: dict[str, Any] = {"version": VERSION, "model": model_label, "strategy": strategy}
    if set is not None:
        recipe["set"] = {name: to_data(value, what=f"set {name}") for name, value in set.items()}
    if transform is not None:
        recipe["transform"] = transform_name(transform)
    if fields:
        recipe["fields"] = list(fields)
    for key, lookups in (("filter", filter), ("exclude", exclude), ("needs", needs)):
        if lookups:
            recipe[key] = to_data(as_q(lookups), what=key)
    recipe["options"] = {k: v for k, v in options.items() if k != "name"}
    return recipe


# -- rebuilding ----------------------------------------------------------------------------


def model_of(recipe: Mapping[str, Any]) -> type[models.Model]:
    """The recipe's model from the real app registry (never a historical one)."""
    return schema.resolve_model(recipe["model"])


def apply_lookups(
    rows: QuerySet[Any], filter: Lookups | None, exclude: Lookups | None
) -> QuerySet[Any]:
    """``rows`` narrowed by ``filter`` and ``exclude`` (dicts or Q); BadInput when unfit."""
    for option, lookups, negate in (("filter", filter, False), ("exclude", exclude, True)):
        if not lookups:
            continue
        q = as_q(lookups)
        try:
            rows = rows.exclude(q) if negate else rows.filter(q)
        except (FieldError, ValueError, TypeError) as exc:
            raise BadInput(
                f"{option}={lookups!r}: {exc} Use Django lookups, e.g. {{'author__isnull': True}}."
            ) from None
    return rows


def queryset(recipe: Mapping[str, Any], rows: QuerySet[Any]) -> QuerySet[Any]:
    """``rows`` narrowed by the recipe's filter and exclude."""
    return apply_lookups(rows, _lookups(recipe, "filter"), _lookups(recipe, "exclude"))


def _lookups(recipe: Mapping[str, Any], key: str) -> Q | None:
    data = recipe.get(key)
    return from_data(data) if data else None


def needs(recipe: Mapping[str, Any]) -> Q | None:
    """The recipe's "needs backfill" lookup, when its operation declared one."""
    return _lookups(recipe, "needs")


def values(recipe: Mapping[str, Any]) -> dict[str, Any] | None:
    data = recipe.get("set")
    if data is None:
        return None
    return {name: from_data(value) for name, value in data.items()}


def compile_check(rows: QuerySet[Any], what: str) -> None:
    """Compile ``rows``'s WHERE clause now, so a lookup that does not fit is bad input."""
    try:
        rows.query.get_compiler(using=rows.db).as_sql()
    except EmptyResultSet:
        return
    except (FieldError, ValueError, TypeError) as exc:
        raise BadInput(
            f"{what}: {exc} Use Django lookups, e.g. {{'author__isnull': True}}."
        ) from None


def validate(recipe: Mapping[str, Any], model: type[models.Model], using: str) -> None:
    """Check the recipe against ``model`` as running it would, without writing anything.

    Raises BadInput for an unknown field, a value the field rejects, a transform that does
    not import, a lookup that does not fit.
    """
    from backfill.transforms import instance_setter, resolve, row_setter
    from backfill.values import validate_mapping

    rows = queryset(recipe, model._base_manager.using(using))
    compile_check(rows, "filter/exclude")
    condition = needs(recipe)
    if condition is not None:
        compile_check(rows.filter(condition), f"needs={condition!r}")
    strategy = recipe["strategy"]
    chosen = values(recipe)
    if chosen is not None:
        chosen = validate_mapping(model, chosen)
        if strategy == "iterate":
            instance_setter(chosen, model)
        elif strategy == "cursor":
            row_setter(chosen, model)
    else:
        resolve(model, recipe.get("transform"), rows=strategy == "cursor")
    if recipe.get("fields"):
        schema.field_list(model, recipe["fields"], purpose="fields")


def call(
    rows: QuerySet[Any],
    strategy: str,
    values: Mapping[str, Any] | None,
    transform: Any,
    fields: Sequence[str] | None,
    options: dict[str, Any],
) -> Result:
    """Run one backfill through the API, as ``RunBackfill`` and a rebuilt recipe both do."""
    if strategy == "update":
        assert values is not None
        return api.update(rows, set=values, **options)
    if strategy == "iterate":
        if values is not None:
            # Only the columns being set are loaded; the others are not needed.
            return api.iterate(rows.only(*values), set=values, **options)
        if fields:
            rows = rows.only(*fields)
        return api.iterate(rows, transform=transform, **options)
    if values is not None:
        return api.cursor(rows, set=values, **options)
    return api.cursor(rows, fields=fields, transform=transform, **options)


def run(
    recipe: Mapping[str, Any], *, name: str, using: str, where: Q | None = None, **options: Any
) -> Result:
    """Rebuild the recipe against the current model and run it as run ``name``.

    ``where`` narrows the rows further. ``options`` (``reporter``, ``stop``, ``max_runtime``,
    ``restart``…) override the stored ones. Raises what ``backfill.update/iterate/cursor``
    raise.
    """
    model = model_of(recipe)
    rows = queryset(recipe, model._base_manager.using(using))
    if where is not None:
        rows = rows.filter(where)
    merged = {**recipe.get("options", {}), **options, "name": name}
    return call(
        rows,
        recipe["strategy"],
        values(recipe),
        recipe.get("transform"),
        recipe.get("fields"),
        merged,
    )
