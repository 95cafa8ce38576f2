"""Transforms the run tests pass by dotted path (``--transform tests.transforms.count_hit``).

Each increments ``Counter.hits``: after a backfill every row must have ``hits == 1``, so a
chunk written twice or skipped shows up in the data itself.
"""

from __future__ import annotations

import os
import time
from typing import Any

# Seconds each row takes in the slow transforms, so a test can stop or kill a run mid-way.
ROW_SECONDS = float(os.environ.get("BACKFILL_TEST_ROW_SECONDS", "0"))


def count_hit(obj: Any) -> None:
    obj.hits += 1


def count_hit_slowly(obj: Any) -> None:
    time.sleep(ROW_SECONDS)
    obj.hits += 1


def count_row_hit_slowly(row: dict[str, Any]) -> dict[str, Any]:
    time.sleep(ROW_SECONDS)
    return {"hits": row["hits"] + 1}


def count_hit_unless_poison(obj: Any) -> None:
    if obj.name == "poison":
        raise ValueError(f"row {obj.pk} is poisoned")
    obj.hits += 1
