"""What is checked before a run writes or records anything: its options, its name, its filter
on the target database, and how many workers the server can take.

Every check raises BadInput (exit 2) with one line that says what was wrong and how to fix it.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import DatabaseError, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet

from backfill.columns import text_problem
from backfill.conf import Options
from backfill.exceptions import BadInput, one_line
from backfill.options import RUN_OPTIONS

NAME_LENGTH = 200  # Run.name
FILTER_SAMPLE_ROWS = 100
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_options(options: Options) -> None:
    """Every knob finite and in range: what the database, the clock and the ledger can hold."""
    for option in RUN_OPTIONS:
        option.check(getattr(options, option.name))


def check_name(name: str, *, given: bool) -> None:
    """A run name the ledger stores as given: 1-200 characters of printable UTF-8 text."""
    what = f"--name {name!r}" if given else f"The derived run name {name!r}"
    if not name.strip():
        raise BadInput(
            "--name must not be empty or blank. Pass a name such as --name nightly-authors, "
            "or leave --name out to derive one."
        )
    if len(name) > NAME_LENGTH:
        raise BadInput(f"{what[:60]}… is {len(name)} characters; at most {NAME_LENGTH}.")
    problem = text_problem(name)
    if problem:
        raise BadInput(f"{what} {problem}. Pass a name of printable UTF-8 text.")
    if CONTROL.search(name):
        raise BadInput(f"{what} contains a control character. Pass a name of printable text.")


def check_workers(
    workers: int, connection: BaseDatabaseWrapper, *, count_connections: bool = True
) -> None:
    """``--workers N`` needs a backend that claims with SKIP LOCKED and, when asked (by the
    parent, before it starts them), N free connections on the server.
    """
    if workers <= 1:
        return
    if connection.vendor not in ("postgresql", "mysql"):
        raise BadInput(
            f"--workers {workers} needs PostgreSQL (chunks are claimed with SKIP LOCKED); "
            f"database {connection.alias!r} is {connection.vendor}. Run with one worker."
        )
    if not count_connections:
        return
    free = free_connections(connection)
    # Each worker holds one connection; the parent keeps its own.
    if free is not None and workers > free:
        raise BadInput(
            f"--workers {workers} needs {workers} more connections but database "
            f"{connection.alias!r} allows {max(free, 0)} more (max_connections minus reserved "
            f"and open ones). Pass --workers {max(free, 1)} or fewer."
        )


FREE_CONNECTIONS_SQL = {
    "postgresql": (
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
    ),
    "mysql": (
        "SELECT @@max_connections - (SELECT COUNT(*) FROM information_schema.PROCESSLIST"
        " WHERE COMMAND <> 'Daemon')"
    ),
}


def free_connections(connection: BaseDatabaseWrapper) -> int | None:
    """How many more connections the server accepts from us now, or None (SQLite)."""
    sql = FREE_CONNECTIONS_SQL.get(connection.vendor)
    if sql is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return int(cursor.fetchone()[0])


def check_filter(queryset: QuerySet[Any]) -> None:
    """Run the queryset's filter on the first rows of the table, in a transaction that is rolled
    back, so what only the database can refuse (an invalid regular expression, a value the
    column type rejects) is bad input before the run starts, not a failed first chunk.
    """
    if not queryset.query.where:
        return
    using = queryset.db
    model: type[models.Model] = queryset.model
    try:
        with transaction.atomic(using=using):
            _check_patterns(queryset)
            sample = list(
                model._base_manager.using(using)
                .order_by("pk")
                .values_list("pk", flat=True)[:FILTER_SAMPLE_ROWS]
            )
            bounded = queryset.filter(pk__lte=sample[-1]) if sample else queryset.none()
            list(bounded.order_by().values_list("pk", flat=True)[:1])
            transaction.set_rollback(True, using=using)
    except (DatabaseError, OverflowError, ValueError, TypeError) as exc:
        raise BadInput(
            f"The filter is refused by database {using!r}: {one_line(exc)}. Fix the "
            "--filter/--exclude value."
        ) from None


def _check_patterns(queryset: QuerySet[Any]) -> None:
    """Regular expressions of ``regex``/``iregex`` lookups compiled by the database itself
    (an empty table evaluates none of them)."""
    connection = transaction.get_connection(queryset.db)
    for lookup in _lookups(queryset.query.where):
        if getattr(lookup, "lookup_name", "") not in ("regex", "iregex"):
            continue
        pattern = lookup.rhs
        if not isinstance(pattern, str):
            continue
        if connection.vendor == "sqlite":
            try:
                re.compile(pattern)
            except re.error as exc:
                raise BadInput(
                    f"The filter's regular expression {pattern!r} is invalid: {exc}. Fix the "
                    "--filter/--exclude value."
                ) from None
            continue
        if connection.vendor == "postgresql":
            template = "%s ~ %s" if lookup.lookup_name == "regex" else "%s ~* %s"
        else:
            template = connection.ops.regex_lookup(lookup.lookup_name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT " + template % ("%s", "%s"), ["", pattern])


def _lookups(node: Any) -> list[Any]:
    found = []
    for child in getattr(node, "children", []):
        if hasattr(child, "children"):
            found.extend(_lookups(child))
        else:
            found.append(child)
    return found
