"""Transforms that tests/migrapp's migrations name by dotted path.

``MIGRAPP_SLOW`` (seconds per row) slows the forward transform down so a subprocess test can
stop ``migrate`` halfway through.
"""

from __future__ import annotations

import os
import time
from typing import Any


def count_hit(ticket: Any) -> None:
    delay = float(os.environ.get("MIGRAPP_SLOW", "0"))
    if delay:
        time.sleep(delay)
    ticket.hits += 1


def uncount_hit(ticket: Any) -> None:
    ticket.hits -= 1
