"""Rendering engine events: a tqdm bar on a terminal, log lines elsewhere, JSON lines for
log pipelines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from backfill import events


def _eta(done: int, total: int | None, rate: float) -> str:
    if not total or rate <= 0 or done >= total:
        return "?"
    seconds = (total - done) / rate
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Base:
    def __init__(self, stream: IO[str], verbosity: int = 1) -> None:
        self.stream = stream
        self.verbosity = verbosity

    def say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def other(self, event: events.Event) -> None:
        if isinstance(event, events.Retrying):
            self.say(
                f"retrying in {event.delay:.1f} s ({event.reason}, attempt {event.attempt}/"
                f"{event.of}, batch size {event.batch_size:,}): {event.error}"
            )
        elif isinstance(event, events.Waiting):
            self.say(f"waiting {event.seconds:.1f} s: {event.reason}")
        elif isinstance(event, events.Notice) and self.verbosity >= 2:
            self.say(event.message)


class LogReporter(_Base):
    """A line every ``interval`` seconds: for cron, CI logs, anything that is not a terminal."""

    def __init__(
        self,
        stream: IO[str],
        verbosity: int = 1,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream, verbosity)
        self.interval = interval
        self.clock = clock
        self.total: int | None = None
        self.started = 0.0
        self.base = 0
        self.last = 0.0
        self.latest: events.ChunkDone | None = None

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.Started):
            self.total, self.base = event.estimated_rows, event.rows_done
            self.started = self.last = self.clock()
            resumed = f", resuming after {event.checkpoint!r}" if event.resumed else ""
            self.say(
                f"backfill {event.name!r}: {event.strategy} on {event.model} at {event.database}, "
                f"~{event.estimated_rows or 0:,} rows{resumed}"
            )
        elif isinstance(event, events.ChunkDone):
            self.latest = event
            now = self.clock()
            if now - self.last >= self.interval:
                self.last = now
                self.line(event, now)
        elif isinstance(event, events.Finished):
            pass
        else:
            self.other(event)

    def line(self, event: events.ChunkDone, now: float) -> None:
        rate = (event.total_scanned - self.base) / max(now - self.started, 1e-9)
        percent = f" ({100 * event.total_scanned / self.total:.1f}%)" if self.total else ""
        total = f"/~{self.total:,}" if self.total else ""
        self.say(
            f"{event.total_scanned:,}{total} rows{percent}, changed {event.total_changed:,}, "
            f"{rate:,.0f} rows/s, batch {event.batch_size:,}, "
            f"ETA {_eta(event.total_scanned, self.total, rate)}"
        )


class BarReporter(_Base):
    """A tqdm progress bar: rows, rows/s, ETA against the estimate."""

    def __init__(self, stream: IO[str], verbosity: int = 1) -> None:
        super().__init__(stream, verbosity)
        self.bar: Any = None

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            super().say(text)

    def __call__(self, event: events.Event) -> None:
        from tqdm import tqdm

        if isinstance(event, events.Started):
            total = max(event.estimated_rows or 0, event.rows_done) or None
            self.bar = tqdm(
                total=total,
                initial=event.rows_done,
                unit=" rows",
                unit_scale=True,
                file=self.stream,
                desc=event.model,
                dynamic_ncols=True,
                smoothing=0.1,
            )
        elif isinstance(event, events.ChunkDone) and self.bar is not None:
            if self.bar.total is not None and event.total_scanned > self.bar.total:
                self.bar.total = event.total_scanned
            # The postfix first, so the redraw that update() triggers already shows it.
            self.bar.set_postfix(
                changed=f"{event.total_changed:,}", batch=f"{event.batch_size:,}", refresh=False
            )
            self.bar.update(event.total_scanned - self.bar.n)
        elif isinstance(event, events.Finished):
            if self.bar is not None:
                bar = self.bar
                if event.result.status == "completed" and bar.total and bar.n < bar.total:
                    # The estimate was high (dead row versions after a rewrite count in the
                    # table's size): a run that completed has seen every row, so it ends at 100%.
                    bar.total = bar.n
                    bar.refresh()
                bar.close()
                self.bar = None
        else:
            self.other(event)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class JsonReporter:
    """One JSON object per line per event, for log pipelines (``--progress json``).

    Every object has ``event`` (``started``, ``chunk_done``, ``waiting``, ``retrying``,
    ``notice``, ``finished``), ``run`` (the run's name) and ``ts`` (ISO 8601, UTC, with
    milliseconds), then the event's own fields under the names docs/watching.md lists. Keys of the
    table (``lo``, ``hi``, ``checkpoint``) are JSON numbers or strings. These names are a
    contract: add fields, never rename them.
    """

    def __init__(self, stream: IO[str], now: Callable[[], datetime] = _utc_now) -> None:
        self.stream = stream
        self.now = now
        self.run = ""

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.Started):
            self.run = event.name
        elif isinstance(event, events.Finished):
            self.run = event.result.name
        kind, fields = json_fields(event)
        stamp = self.now().astimezone(UTC).isoformat(timespec="milliseconds")
        line = {"event": kind, "run": self.run, "ts": stamp.replace("+00:00", "Z"), **fields}
        self.stream.write(json.dumps(line, default=str) + "\n")
        self.stream.flush()


def json_fields(event: events.Event) -> tuple[str, dict[str, Any]]:
    """The name of ``event`` and its fields, as ``--progress json`` prints them."""
    if isinstance(event, events.Started):
        return "started", {
            "model": event.model,
            "strategy": event.strategy,
            "database": event.database,
            "estimated_rows": event.estimated_rows,
            "rows_done": event.rows_done,
            "resumed": event.resumed,
            "checkpoint": _key(event.checkpoint),
        }
    if isinstance(event, events.ChunkDone):
        return "chunk_done", {
            "lo": _key(event.lo),
            "hi": _key(event.hi),
            "rows_scanned": event.rows_scanned,
            "rows_changed": event.rows_changed,
            "seconds": round(event.seconds, 4),
            "batch_size": event.batch_size,
            "total_scanned": event.total_scanned,
            "total_changed": event.total_changed,
            "chunks": event.chunks,
            "summary": event.summary,
            "count": event.count,
        }
    if isinstance(event, events.Waiting):
        return "waiting", {
            "kind": event.kind,
            "reason": event.reason,
            "seconds": round(event.seconds, 3),
        }
    if isinstance(event, events.Retrying):
        return "retrying", {
            "reason": event.reason,
            "attempt": event.attempt,
            "of": event.of,
            "delay": round(event.delay, 3),
            "batch_size": event.batch_size,
            "error": event.error,
        }
    if isinstance(event, events.Notice):
        return "notice", {"message": event.message}
    result = event.result
    return "finished", {
        "status": result.status,
        "message": result.message,
        "rows_scanned": result.rows_scanned,
        "rows_changed": result.rows_changed,
        "chunks": result.chunks,
        "elapsed": round(result.elapsed, 3),
        "rate": round(result.rate, 1),
        "total_rows_scanned": result.total_rows_scanned,
        "total_rows_changed": result.total_rows_changed,
        "total_chunks": result.total_chunks,
        "checkpoint": _key(result.checkpoint),
    }


def _key(value: Any) -> Any:
    """A primary key as JSON: numbers and strings as they are, anything else (UUID, date,
    a composite key's tuple) as text or a list of them."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return [_key(part) for part in value]
    return str(value)
