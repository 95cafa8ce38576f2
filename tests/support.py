"""Helpers for the engine and command tests: run a command, snapshot tables, seed rows."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, models

from backfill.models import Chunk, Run
from example_site.blog.models import BlogPost

# Tests whose chunks must really commit. Flushing only these apps' tables after each test is
# several times faster than flushing every installed app's.
committing = pytest.mark.django_db(
    transaction=True, available_apps=["backfill", "example_site.blog", "tests.testapp"]
)

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL-only feature"
)
sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite-only behaviour")
row_locks_only = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="SQLite locks the whole database, not rows"
)


@dataclass(frozen=True)
class Outcome:
    """What a command did: its exit code and its two output streams."""

    returncode: int
    stdout: str
    stderr: str
    error: str = ""


def run(command: str, *args: str, stderr: Any = None) -> Outcome:
    """``call_command`` with captured output; a CommandError becomes its exit code and message."""
    out = StringIO()
    err = stderr if stderr is not None else StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=err)
    except CommandError as exc:
        return Outcome(exc.returncode, out.getvalue(), err.getvalue(), str(exc))
    return Outcome(0, out.getvalue(), err.getvalue())


def snapshot(*model_classes: type[models.Model]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every given model, ordered by pk: compare before and after."""
    return {
        m._meta.label: [
            tuple(getattr(obj, f.attname) for f in m._meta.concrete_fields)
            for obj in m._base_manager.order_by("pk")
        ]
        for m in model_classes
    }


def seed_posts(count: int, author: str = " some  author ") -> list[int]:
    """``count`` BlogPosts with a messy author; returns their pks in order."""
    BlogPost.objects.bulk_create(BlogPost(title=f"Title {i}", author=author) for i in range(count))
    return list(BlogPost.objects.order_by("pk").values_list("pk", flat=True))


def chunk_bounds(run_name: str | None = None) -> list[tuple[str | None, str, int]]:
    """``(lo, hi, rows)`` of each chunk of the only (or the named) run, in key order."""
    runs = Run.objects.all() if run_name is None else Run.objects.filter(name=run_name)
    run_row = runs.get()
    return list(
        Chunk.objects.filter(run=run_row).order_by("id").values_list("lo", "hi", "rows_scanned")
    )


def statements(queries: Iterable[dict[str, Any]], prefix: str) -> list[str]:
    """The captured SQL statements that start with ``prefix`` (case-insensitive)."""
    return [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(prefix.upper())]


def ansi(sql: str) -> str:
    """SQL with MySQL's backtick-quoted names in double quotes, as on PostgreSQL and SQLite."""
    return sql.replace("`", '"')


def updates_of(queries: Iterable[dict[str, Any]], table: str) -> list[str]:
    """Captured ``UPDATE`` statements that write ``table`` (quoted or not, after a MySQL
    optimizer hint or not)."""
    pattern = re.compile(
        rf'^\s*(WITH .*?\)\s*)?UPDATE\s+(/\*\+.*?\*/\s*)?["`]?{re.escape(table)}["`]?\s',
        re.I | re.S,
    )
    return [q["sql"] for q in queries if pattern.match(q["sql"])]
