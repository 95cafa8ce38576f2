"""OpenTelemetry spans of runs (optional: ``[otel]`` extra).

When the application uses OpenTelemetry (it has imported ``opentelemetry.trace``, as
configuring the SDK does) every run reports to the global tracer provider: a
``backfill.run`` span from start to end, and under it a ``backfill.chunk`` span per committed
chunk with its rows and outcome. ``BACKFILL["TRACING"] = False`` turns it off.

Attributes: ``backfill.run``, ``backfill.model``, ``backfill.strategy`` on the run span, and
at its end ``backfill.status``, ``backfill.rows_scanned``, ``backfill.rows_changed``,
``backfill.chunks``; on chunk spans ``backfill.rows_scanned``, ``backfill.rows_changed``,
``backfill.batch_size`` and ``backfill.outcome`` (``done``, ``retrying``, ``failed``). Waits
and notices are events of the run span.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from backfill import events
from backfill.conf import get_setting


def wanted() -> bool:
    """Whether this process traces: it has loaded the OpenTelemetry API, as configuring its SDK
    (or ``opentelemetry-instrument``) does. Importing it for nobody costs ~0.4 s per run."""
    return bool(get_setting("TRACING")) and sys.modules.get("opentelemetry.trace") is not None


class SpanReporter:
    """Turns the engine's events into spans."""

    def __init__(self, tracer: Any = None) -> None:
        self.tracer = tracer
        self.run: Any = None

    def _start(self, event: events.Started) -> None:
        from opentelemetry import trace

        self.trace = trace
        self.tracer = self.tracer or trace.get_tracer("backfill")
        self.run = self.tracer.start_span(
            "backfill.run",
            attributes={
                "backfill.run": event.name,
                "backfill.model": event.model,
                "backfill.strategy": event.strategy,
                "backfill.database": event.database,
                "backfill.resumed": event.resumed,
                "backfill.rows_done": event.rows_done,
            },
        )

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.Started):
            self._start(event)
            return
        if self.run is None:
            return
        if isinstance(event, events.ChunkDone) and event.summary:
            # The parent of --workers: its workers' chunks, summed; an event, not a chunk span.
            self.run.add_event(
                "progress",
                {
                    "backfill.chunks": event.count,
                    "backfill.rows_scanned": event.rows_scanned,
                    "backfill.rows_changed": event.rows_changed,
                },
            )
        elif isinstance(event, events.ChunkDone):
            self._chunk(
                "done",
                event.seconds,
                {
                    "backfill.rows_scanned": event.rows_scanned,
                    "backfill.rows_changed": event.rows_changed,
                    "backfill.batch_size": event.batch_size,
                    "backfill.chunk.lo": str(event.lo),
                    "backfill.chunk.hi": str(event.hi),
                },
            )
        elif isinstance(event, events.Retrying):
            self._chunk(
                "retrying",
                0.0,
                {
                    "backfill.retry.reason": event.reason,
                    "backfill.retry.attempt": event.attempt,
                    "backfill.batch_size": event.batch_size,
                },
                error=event.error,
            )
        elif isinstance(event, events.Waiting):
            self.run.add_event(
                "waiting",
                {"reason": event.reason, "kind": event.kind, "seconds": event.seconds},
            )
        elif isinstance(event, events.Notice):
            self.run.add_event("notice", {"message": event.message})
        elif isinstance(event, events.Finished):
            self._finish(event)

    def _chunk(
        self, outcome: str, seconds: float, attributes: dict[str, Any], error: str = ""
    ) -> None:
        end = time.time_ns()
        span = self.tracer.start_span(
            "backfill.chunk",
            context=self.trace.set_span_in_context(self.run),
            start_time=end - int(seconds * 1e9),
            attributes={**attributes, "backfill.outcome": outcome},
        )
        if error:
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, error))
        span.end(end_time=end)

    def _finish(self, event: events.Finished) -> None:
        result = event.result
        if result.status == "failed":
            self._chunk("failed", 0.0, {}, error=result.message)
            self.run.set_status(self.trace.Status(self.trace.StatusCode.ERROR, result.message))
        self.run.set_attributes(
            {
                "backfill.status": result.status,
                "backfill.rows_scanned": result.rows_scanned,
                "backfill.rows_changed": result.rows_changed,
                "backfill.chunks": result.chunks,
            }
        )
        self.run.end()
        self.run = None
