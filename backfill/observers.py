"""Who hears a run's events besides the person watching its output.

Every run (command, API, migration operation) reports to the reporter its caller chose (a bar,
log lines, JSON lines, nothing) and to these observers: Django signals (``lifecycle``), and
Prometheus metrics (``metrics``) and OpenTelemetry spans (``tracing``) when the process uses
them (``metrics.wanted``, ``tracing.wanted``) and the settings ``METRICS`` / ``TRACING`` leave
them on.
"""

from __future__ import annotations

from backfill import events, metrics, tracing
from backfill.conf import get_setting
from backfill.lifecycle import LifecycleReporter


def observers() -> list[events.Reporter]:
    found: list[events.Reporter] = [LifecycleReporter()]
    if metrics.wanted():
        found.append(metrics.MetricsReporter(pushgateway=get_setting("METRICS_PUSHGATEWAY")))
    if tracing.wanted():
        found.append(tracing.SpanReporter())
    return found


def attach(reporter: events.Reporter | None) -> events.Reporter:
    """``reporter`` (None = nothing) followed by every observer."""
    return events.FanOut(reporter or events.ignore, *observers())
