"""Settings: one ``BACKFILL`` dict in Django settings; a command-line flag beats it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Rows per chunk; with a target chunk time this is the starting size.
    "BATCH_SIZE": 1000,
    # Seconds each chunk should take; the chunk size adapts toward it. None = fixed size.
    # An explicit --batch-size without --target-chunk-time fixes the size instead.
    "TARGET_CHUNK_TIME": 0.5,
    "MIN_BATCH_SIZE": 100,
    "MAX_BATCH_SIZE": 50_000,
    # A run alone on its table (PostgreSQL, MySQL) plans the next chunk on a second
    # connection while this one is written (backfill.plan_ahead). False = one connection.
    "PLAN_AHEAD": True,
    # Seconds to sleep after each chunk, and a cap on rows per second (None = no cap).
    "SLEEP": 0.0,
    "MAX_RATE": None,
    # PostgreSQL, set with SET LOCAL in each chunk's transaction. None = leave the server's.
    "LOCK_TIMEOUT": 5.0,
    "STATEMENT_TIMEOUT": 60.0,
    # Pause while a replica lags more than this many seconds (None = do not check).
    "MAX_REPLICA_LAG": None,
    # Database aliases of replicas to ask for their lag; empty = ask the primary.
    "REPLICA_ALIASES": [],
    # Transient errors (lock timeout, deadlock, lost connection) retried per chunk.
    "RETRIES": 5,
    "RETRY_BACKOFF": 0.5,
    "RETRY_BACKOFF_MAX": 30.0,
    # How --workers starts its processes: "forkserver" (Python 3.14's default on Linux),
    # "spawn", or "fork" (fastest; Python 3.12+ warns when the parent has threads).
    "WORKER_START_METHOD": "forkserver",
    # A worker that has not sent a heartbeat for this long is presumed dead.
    "LEASE_SECONDS": 60.0,
    # Seconds between progress log lines when not on a terminal.
    "LOG_INTERVAL": 10.0,
    # VACUUM the table after each this share of the table rewritten (PostgreSQL); None = never.
    "VACUUM_EVERY": None,
    # RunBackfill(defer="auto") records the run as pending, to be worked after deploy by
    # backfill_pending, when the table's estimated rows exceed this; below it runs inline.
    "DEFER_ABOVE_ROWS": 100_000,
    # Prometheus metrics of runs in processes that export metrics (see backfill.metrics);
    # where --metrics-port serves them; a Pushgateway ("host:9091") to push them to.
    "METRICS": True,
    "METRICS_ADDRESS": "127.0.0.1",
    "METRICS_PUSHGATEWAY": None,
    # OpenTelemetry spans of runs in processes that loaded opentelemetry (backfill.tracing).
    "TRACING": True,
    # A run handed to a task engine (--engine / engine=): which engine ("celery" or "tasks"
    # for django.tasks), the queue its joiner tasks go to (None = the engine's default queue,
    # "celery" or "default"), how many joiners work the run at once, and the seconds each one
    # works before it hands over to its successor.
    "ENGINE": "celery",
    "ENGINE_QUEUE": None,
    "ENGINE_JOINERS": 4,
    "ENGINE_BUDGET_SECONDS": 600.0,
}


def get_setting(name: str) -> Any:
    user = getattr(settings, "BACKFILL", {}) or {}
    return user.get(name, DEFAULTS[name])


@dataclass(frozen=True)
class Options:
    """How a run behaves; every field None means "use the setting"."""

    batch_size: int | None = None
    name: str | None = None
    restart: bool = False
    dry_run: bool = False
    max_runtime: float | None = None
    sleep: float | None = None
    target_chunk_time: float | None = None
    max_rate: float | None = None
    lock_timeout: float | None = None
    statement_timeout: float | None = None
    max_replica_lag: float | None = None
    workers: int = 1
    count: str = "estimate"
    vacuum_every: float | None = None
    retries: int | None = None
    # Work the run as one of its parallel workers, in this process (a task engine's joiner).
    join: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> Options:
        """A copy with every unset knob filled from settings."""
        return replace(
            self,
            # 0 is kept so the runner rejects it instead of silently using the setting.
            batch_size=self.batch_size
            if self.batch_size is not None
            else get_setting("BATCH_SIZE"),
            sleep=self.sleep if self.sleep is not None else get_setting("SLEEP"),
            target_chunk_time=(
                self.target_chunk_time
                if self.target_chunk_time is not None
                # A size the caller chose is kept as it is, unless they also ask to adapt it.
                else None
                if self.batch_size
                else get_setting("TARGET_CHUNK_TIME")
            ),
            max_rate=self.max_rate if self.max_rate is not None else get_setting("MAX_RATE"),
            lock_timeout=(
                self.lock_timeout if self.lock_timeout is not None else get_setting("LOCK_TIMEOUT")
            ),
            statement_timeout=(
                self.statement_timeout
                if self.statement_timeout is not None
                else get_setting("STATEMENT_TIMEOUT")
            ),
            max_replica_lag=(
                self.max_replica_lag
                if self.max_replica_lag is not None
                else get_setting("MAX_REPLICA_LAG")
            ),
            vacuum_every=(
                self.vacuum_every if self.vacuum_every is not None else get_setting("VACUUM_EVERY")
            ),
            retries=self.retries if self.retries is not None else get_setting("RETRIES"),
        )
