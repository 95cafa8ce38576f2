"""``--vacuum-every``: VACUUM the table after each given share of it was rewritten
(PostgreSQL, one process alone on the run), so dead tuples do not pile up faster than
autovacuum clears them."""

from __future__ import annotations

from collections.abc import Callable

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model

from backfill import database, events


class Vacuum:
    def __init__(
        self,
        model: type[Model],
        connection: BaseDatabaseWrapper,
        *,
        every: float | None,
        estimated_rows: int | None,
        shared: bool,
        report: events.Reporter,
        clock: Callable[[], float],
    ) -> None:
        self.model = model
        self.connection = connection
        self.report = report
        self.clock = clock
        self.step: float | None = None
        if every and not shared and database.is_postgres(connection):
            self.step = max(1.0, (estimated_rows or 0) * every)
        self.next_at = self.step

    def after(self, done: int) -> None:
        """After a chunk: VACUUM when ``done`` rows (this run's total) passed the next step."""
        if self.step is None or self.next_at is None or done < self.next_at:
            return
        self._vacuum(done)
        self.next_at += self.step

    def _vacuum(self, done: int) -> None:
        # A multi-table-inheritance child's fields live in its parents' tables too.
        meta = self.model._meta
        models = [meta.concrete_model or self.model, *meta.get_parent_list()]
        qn = self.connection.ops.quote_name
        table = ", ".join(dict.fromkeys(qn(m._meta.db_table) for m in models))
        t0 = self.clock()
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(f"VACUUM {table}")
        except DatabaseError as exc:
            self.report(events.Notice(f"VACUUM {table} failed: {exc}"))
            return
        self.report(
            events.Notice(f"VACUUM {table} after {done:,} rows took {self.clock() - t0:.1f} s")
        )
