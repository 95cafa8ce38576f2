"""Django signals for a run's lifecycle, so an app can alert or audit without a reporter.

Sent by ``LifecycleReporter``, which every run has (``backfill.observers``), from the process
that runs it (the parent of ``--workers``). Each signal's sender is the model class being
backfilled; receivers get ``run`` (the run's name) and ``event`` (the engine's typed event),
and the ending signals also ``result`` (a ``backfill.result.Result``)::

    from django.dispatch import receiver
    from backfill import lifecycle

    @receiver(lifecycle.run_failed)
    def tell_the_channel(sender, run, result, **kwargs):
        ...

A receiver that raises is logged (``backfill`` logger) and does not stop the run.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps
from django.dispatch import Signal

from backfill import events

logger = logging.getLogger("backfill")

run_started = Signal()
"""The run started or resumed: ``event`` is a ``Started`` (estimate, rows done, resumed)."""
chunk_done = Signal()
"""Chunks were committed: ``event`` is a ``ChunkDone`` (this chunk's rows and the run totals).
With ``--workers`` it is sent about once a second for whatever the workers committed since."""
run_paused = Signal()
"""Paused from the admin (or ``Run.requested``); the same command resumes it."""
run_stopped = Signal()
"""Stopped early and resumable (a signal, ``max_runtime``), or cancelled:
``result.status`` is ``stopped`` or ``cancelled``."""
run_completed = Signal()
"""Every chunk is done (not sent when the run had already completed before this call)."""
run_failed = Signal()
"""A chunk kept failing; ``result.message`` says which and why."""

ENDINGS: dict[str, Signal] = {
    "completed": run_completed,
    "paused": run_paused,
    "stopped": run_stopped,
    "cancelled": run_stopped,
    "failed": run_failed,
}


class LifecycleReporter:
    """Turns the engine's events into the signals above."""

    def __init__(self) -> None:
        self.run = ""
        self.sender: Any = None

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.Started):
            self.run = event.name
            self.sender = _model(event.model)
            self._send(run_started, event)
        elif isinstance(event, events.ChunkDone):
            self._send(chunk_done, event)
        elif isinstance(event, events.Finished):
            signal = ENDINGS.get(event.result.status)
            if signal is not None:
                self.run = event.result.name
                self.sender = self.sender or _model(event.result.model)
                self._send(signal, event, result=event.result)

    def _send(self, signal: Signal, event: events.Event, **extra: Any) -> None:
        if not signal.has_listeners(self.sender):
            return
        answers = signal.send_robust(self.sender, run=self.run, event=event, **extra)
        for receiver, outcome in answers:
            if isinstance(outcome, Exception):
                logger.error(
                    "Receiver %r of a backfill signal for run %r raised: %s",
                    receiver,
                    self.run,
                    outcome,
                    exc_info=outcome,
                )


def _model(label: str) -> Any:
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        # A model only in a migration's historical state: the label stands in for it.
        return label
