"""Fill blog_blogpost with random rows, set-based on the server, for demos and benchmarks.

PostgreSQL: INSERT ... SELECT md5(random()::text) ... FROM generate_series(1, n), then ANALYZE so
pg_class.reltuples (which backfill uses for totals) is right. SQLite: the same through a
recursive CTE and randomblob(). Either way no row crosses the wire; 4M rows take seconds.
"""

from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from example_site.blog.models import BlogPost

POSTGRESQL_INSERT = (
    "INSERT INTO {table} ({title}, {author}) "
    "SELECT md5(random()::text), md5(random()::text) FROM generate_series(1, %s)"
)
SQLITE_INSERT = (
    "WITH RECURSIVE counter(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM counter WHERE n < %s) "
    "INSERT INTO {table} ({title}, {author}) "
    "SELECT lower(hex(randomblob(16))), lower(hex(randomblob(16))) FROM counter"
)
# MySQL/MariaDB: ten digits cross-joined seven times (10M rows at most, LIMITed), since MySQL
# caps recursive CTEs at 1,000 rows by default.
_DIGITS = "(SELECT 0 d UNION ALL " + " UNION ALL ".join(f"SELECT {i}" for i in range(1, 10)) + ")"
MYSQL_INSERT = (
    "INSERT INTO {table} ({title}, {author}) SELECT MD5(RAND()), MD5(RAND()) FROM "
    + ", ".join(f"{_DIGITS} d{i}" for i in range(7))
    + " LIMIT %s"
)
INSERT_SQL = {"postgresql": POSTGRESQL_INSERT, "sqlite": SQLITE_INSERT, "mysql": MYSQL_INSERT}


def _column(field_name: str) -> str:
    field = BlogPost._meta.get_field(field_name)
    assert isinstance(field, models.Field) and field.column
    return field.column


class Command(BaseCommand):
    help = "Insert N random BlogPost rows with set-based SQL (PostgreSQL or SQLite)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--rows", type=int, default=4_000_000, help="Rows to insert (default 4,000,000)."
        )
        parser.add_argument(
            "--batch",
            type=int,
            default=500_000,
            help="Rows per INSERT statement; each batch commits (default 500,000).",
        )
        parser.add_argument(
            "--truncate",
            action="store_true",
            help="Empty the table and reset its id sequence first.",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help=f"Database alias to seed (default {DEFAULT_DB_ALIAS!r}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        rows: int = options["rows"]
        batch: int = options["batch"]
        using: str = options["database"]
        verbosity: int = options["verbosity"]
        if rows <= 0:
            raise CommandError(
                f"--rows must be a positive integer, got {rows}. "
                "Pass the number of rows to insert, e.g. --rows 100000.",
                returncode=2,
            )
        if batch <= 0:
            raise CommandError(
                f"--batch must be a positive integer, got {batch}. "
                "Pass the rows per INSERT statement, e.g. --batch 500000.",
                returncode=2,
            )
        if using not in connections:
            raise CommandError(
                f"Unknown database alias {using!r}. Known aliases: {', '.join(connections)}.",
                returncode=2,
            )
        connection = connections[using]
        if connection.vendor not in INSERT_SQL:
            raise CommandError(
                f"seed_blogposts supports PostgreSQL, MySQL/MariaDB and SQLite, not "
                f"{connection.vendor!r} (database {using!r}).",
                returncode=2,
            )

        meta = BlogPost._meta
        quote = connection.ops.quote_name
        insert_sql = INSERT_SQL[connection.vendor].format(
            table=quote(meta.db_table),
            title=quote(_column("title")),
            author=quote(_column("author")),
        )

        if options["truncate"]:
            self._truncate(connection, meta.db_table)
            if verbosity >= 1:
                self.stdout.write(f"Emptied {meta.db_table} and reset its id sequence.")

        started = time.monotonic()
        done = 0
        while done < rows:
            size = min(batch, rows - done)
            with transaction.atomic(using=using), connection.cursor() as cursor:
                cursor.execute(insert_sql, [size])
            done += size
            if verbosity >= 1:
                elapsed = time.monotonic() - started
                self.stdout.write(
                    f"{done:>12,} / {rows:,} rows ({100 * done / rows:5.1f}%), "
                    f"{done / max(elapsed, 1e-9):,.0f} rows/s"
                )

        if connection.vendor == "postgresql":
            # Keep pg_class.reltuples (the row estimate backfill shows as a total) current.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {quote(meta.db_table)}")
        elif connection.vendor == "mysql" and not connection.in_atomic_block:
            # The same for information_schema.TABLES.TABLE_ROWS. ANALYZE TABLE commits, so not
            # inside a caller's transaction (InnoDB then refreshes it by itself).
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE TABLE {quote(meta.db_table)}")
                cursor.fetchall()

        elapsed = time.monotonic() - started
        if verbosity >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Inserted {rows:,} rows into {meta.db_table} on database {using!r} "
                    f"({connection.vendor}) in {elapsed:.1f} s "
                    f"({rows / max(elapsed, 1e-9):,.0f} rows/s)."
                )
            )

    def _truncate(self, connection: BaseDatabaseWrapper, table: str) -> None:
        # Django's own flush SQL: TRUNCATE ... RESTART IDENTITY on PostgreSQL,
        # DELETE plus a sqlite_sequence reset on SQLite.
        sql_list = connection.ops.sql_flush(no_style(), [table], reset_sequences=True)
        connection.ops.execute_sql_flush(sql_list)
