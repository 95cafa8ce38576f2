"""Narrowing a chunk the database refused down to the row it refused.

When a chunk fails with an error that is not worth a retry (a unique or check constraint, a
value out of range, a foreign key), the database names the constraint but not always the row.
The chunk has already rolled back. Here its prefixes are worked again, each in a transaction
that is always rolled back, halving the range until one key is left: the first row whose
inclusion makes the chunk fail. About log2(rows) tries, each no longer than the chunk itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections, transaction

from backfill.chunks import PlannedChunk
from backfill.strategies import Strategy, key_range

logger = logging.getLogger("backfill")

# Bisection stops trying after this long; the message then names the chunk only.
BUDGET_SECONDS = 120.0


def failing_row(
    strategy: Strategy,
    chunk: PlannedChunk,
    *,
    lock: bool,
    prepare: Callable[[], None] = lambda: None,
    budget: float = BUDGET_SECONDS,
) -> tuple[Any, DatabaseError] | None:
    """The pk of the first row of ``chunk`` whose write fails, with its error; None when no
    single prefix fails again (the failure came from elsewhere) or time ran out.

    ``prepare`` runs first in every try's transaction (the chunk's timeouts).
    """
    using = strategy.queryset.db
    model = strategy.queryset.model
    keys = list(
        model._base_manager.using(using)
        .filter(key_range(chunk, model))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    deadline = time.monotonic() + budget

    def error_up_to(index: int) -> DatabaseError | None:
        """Work the chunk's rows up to ``keys[index]`` and roll back; the error, if any."""
        try:
            with transaction.atomic(using=using):
                prepare()
                strategy.process(PlannedChunk(chunk.lo, keys[index], None, index + 1), lock=lock)
                transaction.set_rollback(True, using=using)
        except DatabaseError as exc:
            if not connections[using].is_usable():
                connections[using].close()
            return exc
        return None

    if not keys:
        return None
    low, high = 0, len(keys) - 1
    error = error_up_to(high)
    if error is None:
        return None
    # Invariant: the prefix up to keys[high] fails; every prefix before keys[low] succeeds.
    while low < high:
        if time.monotonic() > deadline:
            logger.warning("Gave up narrowing the failed chunk to its row after %.0f s", budget)
            return None
        middle = (low + high) // 2
        found = error_up_to(middle)
        if found is None:
            low = middle + 1
        else:
            high, error = middle, found
    return keys[high], error
