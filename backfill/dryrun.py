"""``--dry-run``: the plan of a run and a preview of its first chunk, writing nothing.

Everything is read in one transaction that is rolled back: the key range, the row estimate,
the first chunk's statements and a before/after sample of its rows, and the first chunk's
query plan (EXPLAIN), with a warning when that plan reads the whole table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from django.db import connections, transaction

from backfill import database
from backfill.chunks import KeyPlanner, PlannedChunk
from backfill.result import DryRunPlan
from backfill.strategies import Strategy, key_range


def plan(strategy: Strategy, planner: KeyPlanner, size: int, *, exact: bool) -> DryRunPlan:
    """The plan and a preview of the first chunk, in a transaction that is rolled back."""
    model = strategy.queryset.model
    using = strategy.queryset.db
    with transaction.atomic(using=using):
        bounds = planner.key_range()
        estimate = database.table_rows(connections[using], model, exact=exact)
        first = planner.next_chunk(None, bounds.last, size) if bounds else None
        description = strategy.describe(first)
        preview = strategy.preview(first) if first else []
        explain, warnings = _explain(strategy, first, estimate, size)
        transaction.set_rollback(True)
    return DryRunPlan(
        table=model._meta.db_table,
        first_key=bounds.first if bounds else None,
        last_key=bounds.last if bounds else None,
        estimated_rows=estimate,
        estimated_chunks=math.ceil(estimate / size) if estimate else 0,
        batch_size=size,
        statements=description.statements,
        preview=[{"pk": r.pk, "before": r.before, "after": r.after} for r in preview],
        explain=explain,
        warnings=warnings,
    )


def _explain(
    strategy: Strategy, chunk: PlannedChunk | None, estimate: int, size: int
) -> tuple[list[str], list[str]]:
    """The first chunk's plan, and a warning when it reads the whole table."""
    connection = connections[strategy.queryset.db]
    if chunk is None or connection.vendor == "sqlite":
        return [], []
    model = strategy.queryset.model
    qs = strategy.queryset.filter(key_range(chunk, model)).order_by("pk")
    sql, params = qs.query.sql_with_params()
    # The model's own tables only (MTI parents too): a join to a small table may well be
    # scanned, and a table that fits in one chunk is best read whole.
    tables = {model._meta.db_table} | {
        parent._meta.db_table for parent in model._meta.get_parent_list()
    }
    if not database.is_postgres(connection):
        lines, scanned = database.explain(connection, sql, params, tables)
        return lines, _scan_warnings(scanned, "type ALL", estimate, size)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        lines = [row[0] for row in cursor.fetchall()]
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        found = cursor.fetchone()[0]
    if isinstance(found, str):
        found = json.loads(found)
    scanned = sorted(
        {
            node["Relation Name"]
            for node in _plan_nodes(found[0]["Plan"])
            if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in tables
        }
    )
    return lines, _scan_warnings(scanned, "Seq Scan", estimate, size)


def _scan_warnings(scanned: list[str], how: str, estimate: int, size: int) -> list[str]:
    if scanned and estimate > size:
        return [
            f"The first chunk's plan reads all of {', '.join(scanned)} ({how}): every "
            f"chunk may read the whole table, ~{math.ceil(estimate / size):,} times. Check "
            "that the primary key index is used, or ANALYZE the table."
        ]
    return []


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)
