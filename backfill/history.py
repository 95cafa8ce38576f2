"""A run's pace over time, read from the ledger: its rate chunk by chunk, and an ETA.

Every committed chunk is a ``Chunk`` row with its rows and ``finished_at``, so the pace needs
no extra bookkeeping: rows finished per stretch of wall-clock time is the rate the operator
waits on (pauses and sleeps included), each chunk's rows spread over the time since the
chunk before it. The ETA divides the rows left (against the start-time
estimate) by the recent rate: the last ``RECENT_CHUNKS`` chunks, so a run that slowed down (a
busier database, a rate cap) is not promised its early speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import DEFAULT_DB_ALIAS

from backfill.models import Chunk, Run

# The chart covers at most the latest chunks; a long run's earliest hours drop off the left.
MAX_CHUNKS = 5000
RECENT_CHUNKS = 20
SAMPLES = 40


@dataclass(frozen=True)
class Sample:
    """Rows per second over the stretch of time ending at ``at``."""

    at: datetime
    rate: float


@dataclass(frozen=True)
class Pace:
    samples: tuple[Sample, ...]
    recent_rate: float | None
    eta_seconds: float | None


def pace(run: Run, using: str = DEFAULT_DB_ALIAS) -> Pace:
    """The pace of ``run`` from its done chunks (one query). ETA only while it runs."""
    newest = (
        Chunk.objects.using(using)
        .filter(run=run, status=Chunk.Status.DONE, finished_at__isnull=False)
        .order_by("-finished_at", "-id")
        .values_list("finished_at", "rows_scanned")[:MAX_CHUNKS]
    )
    points = sorted((at, rows) for at, rows in newest if at is not None)
    left = None
    if run.status == Run.Status.RUNNING and run.estimated_rows is not None:
        left = max(run.estimated_rows - run.rows_scanned, 0)
    return measure(points, run.started_at, left)


def measure(
    points: Sequence[tuple[datetime, int]],
    started: datetime | None,
    left: int | None,
    samples: int = SAMPLES,
) -> Pace:
    """The pace of chunks finished at ``points`` (time, rows), in time order.

    ``started`` is when the first of them began (None = unknown: the first chunk's rows then
    only mark the start); ``left`` is the rows still to do, None when no ETA is wanted.
    """
    if not points:
        return Pace((), None, None)
    first, last = points[0][0], points[-1][0]
    begin = started if started is not None and started <= first else first
    span = (last - begin).total_seconds()
    series: tuple[Sample, ...] = ()
    if span > 0:
        width = span / samples
        rows = [0.0] * samples
        previous = 0.0
        for moment, count in points:
            offset = (moment - begin).total_seconds()
            _spread(rows, width, previous, offset, count)
            previous = offset
        series = tuple(
            Sample(begin + (last - begin) * ((i + 1) / samples), rows[i] / width)
            for i in range(samples)
        )
    recent = points[-(RECENT_CHUNKS + 1) :]
    rate = None
    window = (recent[-1][0] - recent[0][0]).total_seconds()
    if len(recent) > 1 and window > 0:
        # The first point only marks where the window starts; its rows were done before it.
        rate = sum(count for _, count in recent[1:]) / window
    elif span > 0:
        rate = sum(count for _, count in points) / span
    eta = None
    if left is not None and rate:
        eta = left / rate
    return Pace(series, rate, eta)


def _spread(rows: list[float], width: float, start: float, end: float, count: int) -> None:
    """Add ``count`` rows, done evenly from ``start`` to ``end`` seconds, to the stretches
    of ``width`` seconds they overlap (a chunk runs from the previous one's end to its own)."""
    if end <= start:
        # Finished together with the previous one (or at the very start): its own stretch.
        index = min(max(math.ceil(end / width) - 1, 0), len(rows) - 1)
        rows[index] += count
        return
    first = min(int(start / width), len(rows) - 1)
    last = min(max(math.ceil(end / width) - 1, first), len(rows) - 1)
    for index in range(first, last + 1):
        overlap = min(end, (index + 1) * width) - max(start, index * width)
        if overlap > 0:
            rows[index] += count * overlap / (end - start)
