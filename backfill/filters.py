"""``--filter`` / ``--exclude`` in Django lookup syntax, checked against the model up front."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import FieldError, ValidationError
from django.db import models
from django.db.models import Q

from backfill.exceptions import BadInput
from backfill.values import parse_bool, split_assignment

LIST_LOOKUPS = {"in", "range"}


def _convert(lookup: str, text: str, *, option: str, raw: str) -> object:
    last = lookup.rsplit("__", 1)[-1] if "__" in lookup else ""
    if last == "isnull":
        return parse_bool(text, what=f"{option} {raw!r}")
    if last in LIST_LOOKUPS:
        items = [item.strip() for item in text.split(",")]
        if last == "range" and len(items) != 2:
            raise BadInput(f"{option} {raw!r}: __range takes two values, e.g. id__range=1,500.")
        return items
    return text


def parse_filters(
    model: type[models.Model], filters: Iterable[str] = (), excludes: Iterable[str] = ()
) -> Q:
    """Combine ``--filter`` and ``--exclude`` strings into one ``Q``, validated on ``model``."""
    combined = Q()
    for option, items, negate in (("--filter", filters, False), ("--exclude", excludes, True)):
        for raw in items:
            lookup, text = split_assignment(raw, option=option)
            q = Q(**{lookup: _convert(lookup, text, option=option, raw=raw)})
            _check(model, q, option=option, raw=raw)
            combined &= ~q if negate else q
    return combined


def _check(model: type[models.Model], q: Q, *, option: str, raw: str) -> None:
    try:
        # Building the WHERE clause resolves every lookup and converts every value.
        query = model._base_manager.filter(q).query
        str(query)
    except FieldError as exc:
        raise BadInput(
            f"{option} {raw!r}: {exc} Use Django lookup syntax, e.g. author__isnull=true."
        ) from None
    except (ValueError, TypeError, ValidationError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        raise BadInput(f"{option} {raw!r}: {message} Pass a value of the field's type.") from None
