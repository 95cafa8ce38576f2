"""backfill: chunked, resumable, throttled data backfills for Django.

The public API: ``update``, ``iterate``, ``cursor`` (run a backfill), ``register`` (name a
transform in ``<app>/backfills.py``), the ``Result`` they return and the exceptions they raise.
"""

from __future__ import annotations

from backfill.api import cursor, iterate, update
from backfill.exceptions import (
    BackfillError,
    BadInput,
    ChunkFailed,
    InsideTransaction,
    Interrupted,
    RunBusy,
    TransformFailed,
)
from backfill.registry import register
from backfill.result import Result
from backfill.stopping import catch_early

# Before the rest of Django loads: a signal during start-up stops the command cleanly.
catch_early()

__version__ = "0.1.0"

__all__ = [
    "BackfillError",
    "BadInput",
    "ChunkFailed",
    "InsideTransaction",
    "Interrupted",
    "Result",
    "RunBusy",
    "TransformFailed",
    "cursor",
    "iterate",
    "register",
    "update",
]
