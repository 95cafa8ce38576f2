"""Verification: how many rows still need a run's change, counted chunk by chunk.

The rows are the run's (its filter and exclude, over the whole table as it is now, so rows
inserted after the run began are counted too). A row still needs the change when:

- for a ``set=`` run, a value differs from the one set (NULL-safe: ``IS DISTINCT FROM``);
- for a transform, it matches the "needs backfill" lookup the operation declared
  (``needs={"author_slug__isnull": True}``) or the caller passes.

The count walks the primary key in ranges planned like a backfill's chunks (``KeyPlanner``):
each range is one short ``COUNT(*)``, never one long scan holding a snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from django.core.exceptions import FieldError
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models import Q

from backfill import recipes
from backfill.chunks import KeyPlanner
from backfill.deferred import find_recipe
from backfill.exceptions import BadInput
from backfill.strategies import UpdateStrategy, key_range
from backfill.values import validate_mapping

# Keys per counted range: a count reads the range's rows, so it can be larger than a write
# chunk and still be short.
BATCH_SIZE = 10_000
SAMPLE = 5


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found: ``remaining`` rows still need the change; ``pks`` shows a few."""

    name: str
    model: str
    database: str
    condition: str
    remaining: int
    pks: list[Any] = field(default_factory=list)
    ranges: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.remaining == 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pks"] = [pk if isinstance(pk, (int, str)) else str(pk) for pk in self.pks]
        data["elapsed"] = round(self.elapsed, 3)
        data["ok"] = self.ok
        return data


def condition(
    recipe: Mapping[str, Any], model: type[models.Model], needs: Mapping[str, Any] | Q | None = None
) -> tuple[Q, str]:
    """The rows of ``recipe`` still needing the change, as a Q, and how to say it.

    ``needs`` (a lookup dict or Q) overrides the recipe's own. Raises BadInput for a transform
    without one.
    """
    wanted = recipes.as_q(needs) if needs is not None else recipes.needs(recipe)
    if wanted is not None:
        return wanted, f"needs {wanted!r}"
    values = recipes.values(recipe)
    if values is None:
        raise BadInput(
            f"Run of {recipe['model']} applies transform {recipe.get('transform')!r}, so "
            "verification needs to know which rows still need it: declare "
            "needs={'field__isnull': True} (or {'field': ''}) on its RunBackfill, or pass "
            "--needs LOOKUP=V (needs= in the API)."
        )
    differs = UpdateStrategy(model._base_manager.none(), validate_mapping(model, values)).differs
    return differs, "a value differs from " + ", ".join(sorted(values))


def verify(
    name: str,
    *,
    using: str = DEFAULT_DB_ALIAS,
    needs: Mapping[str, Any] | Q | None = None,
    batch_size: int = BATCH_SIZE,
    sample: int = SAMPLE,
    clock: Callable[[], float] = time.monotonic,
) -> Verification:
    """Count the rows of run ``name`` that still need its change, range by range.

    The run is rebuilt from its recipe against the current model (a ``RunBackfill`` that found
    its table empty recorded no run; its operation's recipe is used). Raises BadInput for an
    unknown run, a run without a recipe, a transform without a ``needs`` lookup.
    """
    if batch_size <= 0:
        raise BadInput(f"batch_size must be positive, got {batch_size}.")
    _run, recipe = find_recipe(name, using)
    model = recipes.model_of(recipe)
    where, said = condition(recipe, model, needs)
    rows = recipes.queryset(recipe, model._base_manager.using(using))
    try:
        rows = rows.filter(where)
    except (FieldError, ValueError, TypeError) as exc:
        raise BadInput(
            f"{said}: {exc} Use Django lookups, e.g. author_slug__isnull=true."
        ) from None
    recipes.compile_check(rows, said)
    started = clock()
    planner = KeyPlanner(model, connections[using])
    bounds = planner.key_range()
    remaining = ranges = 0
    pks: list[Any] = []
    lo = None
    while bounds is not None:
        chunk = planner.next_chunk(lo, bounds.last, batch_size)
        if chunk is None:
            break
        in_range = rows.filter(key_range(chunk))
        found = in_range.count()
        if found and len(pks) < sample:
            pks += in_range.order_by("pk").values_list("pk", flat=True)[: sample - len(pks)]
        remaining += found
        ranges += 1
        lo = chunk.hi
    return Verification(
        name=name,
        model=model._meta.label,
        database=using,
        condition=said,
        remaining=remaining,
        pks=pks,
        ranges=ranges,
        elapsed=clock() - started,
    )
