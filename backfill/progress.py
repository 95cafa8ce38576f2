"""Rendering engine events for people: a tqdm bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

from backfill import events
from backfill.result import Result


def _eta(done: int, total: int | None, rate: float) -> str:
    if not total or rate <= 0 or done >= total:
        return "?"
    seconds = (total - done) / rate
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary_line(result: Result) -> str:
    return (
        f"scanned {result.rows_scanned:,} rows, changed {result.rows_changed:,}, "
        f"{result.chunks:,} chunks in {result.elapsed:.1f} s ({result.rate:,.0f} rows/s)"
    )


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
                self.bar.close()
                self.bar = None
        else:
            self.other(event)


def reporter_for(stream: IO[str], mode: str, verbosity: int = 1) -> events.Reporter:
    """The reporter for ``--progress MODE``: ``auto`` is a bar on a terminal, else log lines."""
    if verbosity == 0 or mode == "none":
        return events.ignore
    if mode == "auto":
        mode = "bar" if getattr(stream, "isatty", lambda: False)() else "log"
    if mode == "bar":
        return BarReporter(stream, verbosity)
    from backfill.conf import get_setting

    return LogReporter(stream, verbosity, interval=float(get_setting("LOG_INTERVAL")))
