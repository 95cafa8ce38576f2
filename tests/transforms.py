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


def count_hit_or_drop_connection(obj: Any) -> None:
    """On a row named "drop", terminate this process's own database session, then count."""
    if obj.name == "drop":
        terminate_my_session()
    obj.hits += 1


def other_connection() -> Any:
    """A second psycopg connection (autocommit) to the database of Django's connection."""
    import psycopg
    from django.db import connection

    settings = connection.settings_dict
    return psycopg.connect(
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"] or None,
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
        autocommit=True,
    )


def terminate_my_session() -> None:
    """``pg_terminate_backend`` of Django's connection, from a second connection.

    The next statement on the terminated session fails as after a server restart.
    """
    from django.db import connection

    assert connection.connection is not None
    pid = connection.connection.info.backend_pid
    with other_connection() as other:
        other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


# -- transforms that misbehave (tests/test_trust.py) ---------------------------------------

LONG_AUTHOR = "x" * 100


def long_author(obj: Any) -> None:
    obj.author = LONG_AUTHOR


def long_author_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"author": LONG_AUTHOR}


def padded_author(obj: Any) -> None:
    """60 characters and three spaces: PostgreSQL would cut the spaces without a word."""
    obj.author = "y" * 60 + "   "


def nul_author(obj: Any) -> None:
    obj.author = "a\x00b"


def surrogate_author_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"author": "caf\udce9"}


def huge_hits(obj: Any) -> None:
    obj.hits = 2**40


def exit_seven(obj: Any) -> None:
    raise SystemExit(7)


def interrupt(obj: Any) -> None:
    raise KeyboardInterrupt


def move_primary_key(obj: Any) -> None:
    obj.pk = obj.pk + 1
    obj.name = "moved"


def same_code(obj: Any) -> None:
    obj.code = "same"


# The value the property tests (tests/test_properties.py) make a transform return.
GENERATED: Any = None


def generated_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"author": GENERATED}


def generated_instance(obj: Any) -> None:
    obj.author = GENERATED
