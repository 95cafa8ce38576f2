"""How a process gets its chunks: alone on the run, or as one of its parallel workers.

Alone, a process plans the next chunk inside the transaction that writes it, under the run's
row lock. Sharing a run (``--workers``, another host, an engine's joiners), processes plan
chunks in their own short transactions and claim pending ones with ``SKIP LOCKED``; a chunk
that timed out is split in two so its retry is smaller.
"""

from __future__ import annotations

from typing import Any

from backfill.chunk_book import Claim
from backfill.chunks import PlannedChunk
from backfill.ledger import Ledger
from backfill.models import Run


class Solo:
    shared = False

    def claim(self, ledger: Ledger, run: Run, size: int) -> Claim:
        return ledger.chunks.claim(run, size, plan_inline=True)

    def plan_more(self, ledger: Ledger, run: Run, size: int) -> bool:
        """Nothing to plan outside the chunk's transaction: an empty claim is the end."""
        return False

    def shrink(self, ledger: Ledger, chunk: PlannedChunk | None) -> None:
        """The next chunk is planned smaller by the pacer; nothing else to cut."""

    def is_last(self, chunk: PlannedChunk, end_key: Any) -> bool:
        return bool(chunk.hi == end_key)


class Shared:
    shared = True

    def claim(self, ledger: Ledger, run: Run, size: int) -> Claim:
        return ledger.chunks.claim(run, size, plan_inline=False)

    def plan_more(self, ledger: Ledger, run: Run, size: int) -> bool:
        """Append a pending chunk to claim next; False when the whole range is planned."""
        return ledger.chunks.plan(run, size)

    def shrink(self, ledger: Ledger, chunk: PlannedChunk | None) -> None:
        if chunk is not None:
            ledger.chunks.split(chunk)

    def is_last(self, chunk: PlannedChunk, end_key: Any) -> bool:
        # Other processes work the chunks around it: which one is last is not known here.
        return False


Claims = Solo | Shared
