"""Prometheus metrics of runs, with ``prometheus_client`` (optional: ``[prometheus]`` extra).

Every run updates the metrics below in the process that runs it, when that process exports
metrics (``wanted``; ``BACKFILL["METRICS"] = False`` turns them off); how they reach
Prometheus is the deployment's choice:

- ``--metrics-port PORT`` on a command serves them over HTTP (``serve``), on
  ``BACKFILL["METRICS_ADDRESS"]`` (default 127.0.0.1), while the command runs;
- a task-engine worker sets ``PROMETHEUS_MULTIPROC_DIR`` (before ``prometheus_client`` is
  imported) and its exporter collects every process's values; ``serve`` does so too when it
  is set;
- or ``BACKFILL["METRICS_PUSHGATEWAY"] = "host:9091"`` pushes them to a Pushgateway every
  ``PUSH_EVERY`` seconds and when the call ends, grouped by run.

``METRICS`` is the table docs/watching.md's list is checked against: name, type, labels, meaning.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backfill import events
from backfill.conf import get_setting
from backfill.exceptions import BadInput

logger = logging.getLogger("backfill")

PUSH_EVERY = 10.0
LABELS = ("run", "model")
STATUSES = ("running", "paused", "stopped", "completed", "failed", "cancelled")
# Chunks take from milliseconds to (with a target chunk time of 0.5 s) about a second.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: tuple[str, ...]
    meaning: str


METRICS = (
    Metric("backfill_rows_scanned_total", "counter", LABELS, "Rows read (keys covered)."),
    Metric("backfill_rows_changed_total", "counter", LABELS, "Rows written because they changed."),
    Metric("backfill_chunks_total", "counter", LABELS, "Chunks committed."),
    Metric(
        "backfill_chunk_duration_seconds",
        "histogram",
        LABELS,
        "Time from a chunk's claim to its commit.",
    ),
    Metric("backfill_batch_size", "gauge", LABELS, "Rows per chunk now (pacing adapts it)."),
    Metric(
        "backfill_estimated_rows",
        "gauge",
        LABELS,
        "Rows in the table when the run started (planner estimate unless --count exact).",
    ),
    Metric(
        "backfill_run_rows_scanned",
        "gauge",
        LABELS,
        "Rows the run has scanned in all, earlier processes included: progress against "
        "backfill_estimated_rows.",
    ),
    Metric(
        "backfill_last_update_timestamp_seconds",
        "gauge",
        LABELS,
        "Unix time of the last committed chunk.",
    ),
    Metric(
        "backfill_waits_total",
        "counter",
        (*LABELS, "reason"),
        "Times the run held back on purpose; reason: rate cap, replica lag, replica lag unknown.",
    ),
    Metric(
        "backfill_wait_seconds_total",
        "counter",
        (*LABELS, "reason"),
        "Seconds the run chose to hold back, by reason.",
    ),
    Metric(
        "backfill_retries_total",
        "counter",
        (*LABELS, "reason"),
        "Chunks retried after a transient error; reason: lock timeout, deadlock, connection "
        "lost...",
    ),
    Metric(
        "backfill_run_status",
        "gauge",
        (*LABELS, "status"),
        "1 for the run's current status (running, paused, stopped, completed, failed, "
        "cancelled), 0 for the others.",
    ),
)


def wanted() -> bool:
    """Whether this process exports metrics: it has loaded prometheus_client (an app exposing
    metrics, ``--metrics-port``), or writes them for another process to export
    (``PROMETHEUS_MULTIPROC_DIR``) or push (``METRICS_PUSHGATEWAY``). Importing
    prometheus_client only for metrics nobody reads would slow every run's start."""
    if not get_setting("METRICS"):
        return False
    if sys.modules.get("prometheus_client") is not None:
        return True
    exported = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or get_setting("METRICS_PUSHGATEWAY")
    return bool(exported) and importlib.util.find_spec("prometheus_client") is not None


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise BadInput(
            "Metrics need prometheus_client, which is not installed. Install it with "
            "pip install 'django-backfill[prometheus]', or drop --metrics-port."
        ) from None
    return prometheus_client


_metrics: dict[str, Any] = {}


def registered() -> dict[str, Any]:
    """The metric objects by name, created in the default registry on first use."""
    if not _metrics:
        client = _client()
        for metric in METRICS:
            kwargs: dict[str, Any] = {}
            if metric.type == "histogram":
                kwargs["buckets"] = DURATION_BUCKETS
            elif metric.type == "gauge":
                # Across processes (PROMETHEUS_MULTIPROC_DIR) the newest value wins.
                kwargs["multiprocess_mode"] = "mostrecent"
            kind = {"counter": client.Counter, "gauge": client.Gauge}.get(
                metric.type, client.Histogram
            )
            # prometheus_client adds the _total suffix of counters itself.
            name = metric.name.removesuffix("_total")
            _metrics[metric.name] = kind(name, metric.meaning, metric.labels, **kwargs)
    return _metrics


def serve(port: int, address: str | None = None) -> str:
    """Serve the metrics over HTTP on ``address:port`` in a daemon thread; returns the URL.

    With ``PROMETHEUS_MULTIPROC_DIR`` set it serves every process's values. Raises BadInput
    when prometheus_client is missing, the port is out of range or cannot be bound.
    """
    client = _client()
    address = address or str(get_setting("METRICS_ADDRESS"))
    if not 0 < port < 65536:
        raise BadInput(f"--metrics-port {port!r} is not a TCP port; pass one from 1 to 65535.")
    registry = client.REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = client.CollectorRegistry()
        # prometheus_client's multiprocess module has no annotations.
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registered()
    try:
        client.start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise BadInput(
            f"Cannot serve metrics on {address}:{port} ({exc.strerror or exc}). Pick a free "
            "port with --metrics-port, or another BACKFILL['METRICS_ADDRESS']."
        ) from None
    url = f"http://{address}:{port}/metrics"
    logger.info("Serving Prometheus metrics on %s", url)
    return url


class MetricsReporter:
    """Updates the metrics from the engine's events."""

    def __init__(
        self, pushgateway: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # Registered at the first event, when the run is claimed.
        self.metrics: dict[str, Any] = {}
        self.pushgateway = pushgateway
        self.clock = clock
        self.labels: tuple[str, str] = ("", "")
        self.pushed = 0.0

    def _get(self, name: str, *extra: str) -> Any:
        return self.metrics[name].labels(*self.labels, *extra)

    def __call__(self, event: events.Event) -> None:
        self.metrics = self.metrics or registered()
        if isinstance(event, events.Started):
            self.labels = (event.name, event.model)
            if event.estimated_rows is not None:
                self._get("backfill_estimated_rows").set(event.estimated_rows)
            self._get("backfill_run_rows_scanned").set(event.rows_done)
            self._status("running")
        elif isinstance(event, events.ChunkDone):
            self._get("backfill_rows_scanned_total").inc(event.rows_scanned)
            self._get("backfill_rows_changed_total").inc(event.rows_changed)
            self._get("backfill_chunks_total").inc(event.count)
            if not event.summary:
                self._get("backfill_chunk_duration_seconds").observe(event.seconds)
            self._get("backfill_batch_size").set(event.batch_size)
            self._get("backfill_run_rows_scanned").set(event.total_scanned)
            self._get("backfill_last_update_timestamp_seconds").set_to_current_time()
            if self.clock() - self.pushed >= PUSH_EVERY:
                self._push()
        elif isinstance(event, events.Waiting):
            self._get("backfill_waits_total", event.kind).inc()
            self._get("backfill_wait_seconds_total", event.kind).inc(event.seconds)
        elif isinstance(event, events.Retrying):
            self._get("backfill_retries_total", event.reason).inc()
        elif isinstance(event, events.Finished) and event.result.status in STATUSES:
            self.labels = (event.result.name, event.result.model)
            self._status(event.result.status)
            self._push()

    def _status(self, current: str) -> None:
        for status in STATUSES:
            self._get("backfill_run_status", status).set(1 if status == current else 0)

    def _push(self) -> None:
        self.pushed = self.clock()
        if not self.pushgateway:
            return
        client = _client()
        try:
            client.pushadd_to_gateway(
                self.pushgateway,
                job="backfill",
                registry=client.REGISTRY,
                grouping_key={"run": self.labels[0]},
            )
        except OSError as exc:
            # Metrics are for watching; a Pushgateway that is away must not stop the work.
            logger.warning("Could not push metrics to %s: %s", self.pushgateway, exc)
