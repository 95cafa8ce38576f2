"""What holds a run between chunks: a stop (a signal, --max-runtime), the pace (the pause
after a chunk, a rate cap) and replica lag. Waits are sliced so a signal still stops the run
within a second, and keep the run's lease alive while they last."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import DatabaseError, connections

from backfill import database, events
from backfill.conf import Options, get_setting
from backfill.ledger import Ledger
from backfill.models import Run
from backfill.pacing import Pacer
from backfill.retry import Retrier
from backfill.stopping import StopFlag

logger = logging.getLogger("backfill")

HEARTBEAT_EVERY = 5.0
WAIT_SLICE = 1.0
# How long to wait before asking again when a replica's lag cannot be read.
UNKNOWN_LAG_WAIT = 5.0


class Gates:
    def __init__(
        self,
        options: Options,
        *,
        stop: StopFlag,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        report: events.Reporter,
        retried: Retrier,
        ledger: Ledger,
        run: Run,
    ) -> None:
        self.options = options
        self.stop = stop
        self.clock = clock
        self.sleep = sleep
        self.report = report
        self.retried = retried
        self.ledger = ledger
        self.run = run
        self.last_beat = clock()

    def stop_reason(self, elapsed: float) -> str | None:
        """Why the run must stop now (a signal, the runtime limit), or None."""
        if self.stop:
            return str(self.stop.reason)
        if self.options.max_runtime is not None and elapsed >= self.options.max_runtime:
            return f"--max-runtime {self.options.max_runtime:g}s"
        return None

    def keep_alive(self) -> None:
        """Heartbeat the run when the last one is HEARTBEAT_EVERY old."""
        if self.clock() - self.last_beat >= HEARTBEAT_EVERY:
            self.last_beat = self.clock()
            self.retried.quietly(self.ledger.heartbeat, self.run)

    def pause(self, seconds: float) -> None:
        """Sleep in slices so a signal still stops the run promptly; keep the lease alive."""
        end = self.clock() + seconds
        while not self.stop:
            left = end - self.clock()
            if left <= 0:
                return
            self.sleep(min(left, WAIT_SLICE))
            if seconds > HEARTBEAT_EVERY:
                self.retried.quietly(self.ledger.heartbeat, self.run)

    def waiting(self, event: events.Waiting) -> None:
        """Say why the run holds back, and record it on the run for the admin."""
        self.report(event)
        self.retried.quietly(self.ledger.wait, self.run, event.reason)

    def pace(self, pacer: Pacer, last: bool) -> None:
        """The pause after a chunk (none after the run's last): --sleep, or the rate cap."""
        delay = 0.0 if last else pacer.delay()
        if delay <= 0:
            return
        opts = self.options
        if delay >= WAIT_SLICE and opts.max_rate and delay > (opts.sleep or 0.0):
            reason = f"rate cap {opts.max_rate:g} rows/s"
            self.waiting(events.Waiting(reason, delay, "rate cap"))
        self.pause(delay)

    def hold_for_replicas(self, started: float) -> bool:
        """Hold the run while a replica lags too much. True when it was stopped meanwhile."""
        limit = self.options.max_replica_lag
        if not limit:
            return False
        aliases = list(get_setting("REPLICA_ALIASES") or [])
        using = self.ledger.using
        waited = False
        while True:
            if self.stop_reason(self.clock() - started):
                return True
            # Short waits do not heartbeat by themselves; a long hold must keep the lease.
            self.keep_alive()
            try:
                worst = database.replica_lag(using, aliases)
            except DatabaseError as exc:
                for alias in {using, *aliases}:
                    if not connections[alias].is_usable():
                        connections[alias].close()
                waited = True
                reason = f"cannot read replica lag ({' '.join(str(exc).split())}); waiting"
                logger.warning(reason)
                self.waiting(events.Waiting(reason, UNKNOWN_LAG_WAIT, "replica lag unknown"))
                self.pause(UNKNOWN_LAG_WAIT)
                continue
            if worst is None or worst[0] <= limit:
                if waited:
                    now = f"{worst[0]:.2f} s" if worst else "no replica"
                    message = f"Replica lag is back under {limit:g} s ({now}); resuming."
                    logger.info(message)
                    self.report(events.Notice(message))
                return False
            lag, where = worst
            wait = min(max(lag - limit, 1.0), 10.0)
            reason = f"{where} lags {lag:.2f} s > --max-replica-lag {limit:g} s; pausing"
            logger.info(reason)
            waited = True
            self.waiting(events.Waiting(reason, wait, "replica lag"))
            self.pause(wait)
