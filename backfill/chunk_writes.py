"""Writing a chunk's changed rows as its batches are read.

On PostgreSQL and MySQL/MariaDB, once the caller has transformed a read batch, that batch's changes
are checked and queued as one ``UPDATE … FROM unnest(…)`` (on MySQL ``… JSON_TABLE(…)``, or a list
of keys when the rows all take the same values), which the server runs while the caller transforms
the next batch (``backfill.reading``). Python and the server then work at the same time instead of
taking turns, and a chunk holds one batch of changes at most. Everything stays inside the chunk's
transaction: its checkpoint is written after the last batch's write, in the same commit, so a crash
still leaves all of a chunk's rows or none. Elsewhere (SQLite, a model built by Django's own
iterator, a MySQL connection with an unbuffered cursor class) the changes are kept and written
together after the last batch, one statement per table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db import connections, models

from backfill.bulk import BulkWriter, Change, uniform_names
from backfill.chunks import PlannedChunk
from backfill.columns import check_changes
from backfill.reading import Batch, Batches


class ChunkWrites:
    """The changed rows of one chunk, written batch by batch where the reader allows it.

    The scan appends ``(pk, {attname: value})`` to ``changes``, in key order; ``after`` hands
    the reader's batches on and writes what the scan added once it asks for the next batch;
    ``finish`` writes the rest and returns the number of rows written. Raises ValueRejected for a
    value its column cannot hold, before anything of that batch is sent.
    """

    def __init__(self, model: type[models.Model], using: str, chunk: PlannedChunk) -> None:
        self.model = model
        self.connection = connections[using]
        self.chunk = chunk
        self.changes: list[Change] = []
        self.lo: Any = chunk.lo
        self.written = 0
        self.reader: Batches | None = None
        self.writer: BulkWriter | None = None

    def after(self, reader: Batches) -> Iterator[Batch]:
        """The reader's batches; each batch's changes are written (or queued) before the next
        batch is handed out."""
        self.reader = reader
        for batch in reader:
            yield batch
            if self.changes and reader.writes_ahead:
                self._write(self.changes[-1][0])

    def finish(self) -> int:
        """Write what is left (all of it, where nothing went batch by batch); rows written."""
        if self.changes:
            self._write(self.chunk.hi)
        return self.written

    def _write(self, hi: Any) -> None:
        # The rows so far all have keys in (lo, hi]: the statement scans only that range.
        changes = self.changes
        names = uniform_names(changes)
        check_changes(self.model, self.connection, changes, names)
        if self.writer is None:
            later = self.reader.write_later if self.reader is not None else None
            self.writer = BulkWriter(self.model, self.connection, send=later)
        self.written += self.writer.write(changes, self.lo, hi, names)
        self.lo = hi
        changes.clear()  # the statement holds its own copy of the values
