"""Retries: transient database errors (a lost connection, a lock timeout, a deadlock) are
retried with exponential backoff; bookkeeping that may fail while the database is away is
skipped quietly, for the next chunk to retry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper

from backfill import database, events
from backfill.conf import get_setting
from backfill.exceptions import one_line

logger = logging.getLogger("backfill")
T = TypeVar("T")


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): doubling, capped."""
    first = float(get_setting("RETRY_BACKOFF"))
    return float(min(first * 2.0 ** (attempt - 1), float(get_setting("RETRY_BACKOFF_MAX"))))


def reset_if_broken(connection: BaseDatabaseWrapper) -> None:
    """Close a connection the server dropped, so the next query opens a new one."""
    if not connection.is_usable():
        connection.close()


class Retrier:
    """Retries a run's work outside its chunks, on the errors a chunk is retried on."""

    def __init__(
        self,
        connection: BaseDatabaseWrapper,
        *,
        retries: int,
        batch_size: int,
        report: events.Reporter,
        sleep: Callable[[float], None],
    ) -> None:
        self.connection = connection
        self.retries = retries
        self.batch_size = batch_size
        self.report = report
        self.sleep = sleep

    def __call__(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)``, retried with backoff while the error is transient: a lost
        connection or a restarting server must not leave a run ``running`` with its work done.
        """
        attempt = 0
        while True:
            try:
                return func(*args, **kwargs)
            except DatabaseError as exc:
                reason = database.transient_reason(exc)
                attempt += 1
                if reason is None or attempt > self.retries:
                    raise
                reset_if_broken(self.connection)
                delay = backoff(attempt)
                name = getattr(func, "__name__", "bookkeeping")
                logger.warning("Retrying %s in %.1f s (%s)", name, delay, reason)
                self.report(
                    events.Retrying(
                        reason, attempt, self.retries, delay, self.batch_size, one_line(exc)
                    )
                )
                self.sleep(delay)

    def quietly(self, func: Callable[..., Any], *args: Any) -> None:
        """Bookkeeping that may fail while the database is away; the next chunk retries."""
        try:
            func(*args)
        except DatabaseError as exc:
            logger.warning("Skipped %s: %s", getattr(func, "__name__", func), exc)
            reset_if_broken(self.connection)
