"""The chunks of a run in the ledger: which chunk a process works next, and that it is done.

Alone on a run, a process plans its next chunk inside the transaction that writes it, under
the run's row lock. Processes sharing a run plan chunks in short transactions of their own and
claim pending ones with ``SELECT … FOR UPDATE SKIP LOCKED``: a claim is the row lock itself,
so a process that dies releases its chunk with its connection. A chunk is recorded done in the
transaction that wrote its rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from backfill.chunks import ChunkWork, KeyPlanner, PlannedChunk
from backfill.models import Chunk as ChunkRow
from backfill.models import Run
from backfill.plan_ahead import PlanAhead


def checkpoint_of(frontier: str | None, *, pending: bool, lowest_pending: str | None) -> str | None:
    """The key below which every chunk is done, as stored text (None: the table's start): the
    lowest pending chunk's lower bound while chunks wait (parallel runs, a killed worker), else
    the frontier."""
    return lowest_pending if pending else frontier


@dataclass(frozen=True)
class Claim:
    chunk: PlannedChunk | None
    requested: str = ""


class ChunkBook:
    def __init__(
        self, using: str, planner: KeyPlanner, *, worker: str, ahead: PlanAhead | None = None
    ) -> None:
        self.using = using
        self.planner = planner
        # Alone on the run: where the next chunk's plan may already be waiting.
        self.ahead = ahead
        self.worker_name = worker
        self.no_pending = False

    def _key(self, value: Any) -> str:
        """An upper chunk bound as stored: never None, a chunk always ends at a key."""
        text = self.planner.to_text(value)
        assert text is not None
        return text

    def claim(self, run: Run, size: int, *, plan_inline: bool) -> Claim:
        """In the chunk's transaction: lock the next chunk to work, planning it if allowed.

        With one worker the run row is locked and the next chunk planned in the same
        transaction that writes it; parallel workers plan in their own short transactions
        (``plan``) and claim pending chunks with SKIP LOCKED.
        """
        runs = Run.objects.using(self.using).filter(pk=run.pk)
        if plan_inline:
            state = runs.select_for_update().values("requested", "frontier", "planned_all").get()
        else:
            state = runs.values("requested", "frontier", "planned_all").get()
        if state["requested"]:
            return Claim(None, state["requested"])
        pending = None
        if not (plan_inline and self.no_pending):
            pending = (
                ChunkRow.objects.using(self.using)
                .select_for_update(skip_locked=True)
                .filter(run=run, status=ChunkRow.Status.PENDING)
                .order_by("id")
                .values("id", "lo", "hi", "rows_scanned")
                .first()
            )
            # Alone on the run, this process plans and completes chunks in one transaction:
            # once no pending chunk (left by parallel workers) remains, none can appear.
            self.no_pending = plan_inline and pending is None
        if pending is not None:
            return Claim(
                PlannedChunk(
                    self.planner.from_text(pending["lo"]),
                    self.planner.from_text(pending["hi"]),
                    pending["id"],
                    pending["rows_scanned"],
                )
            )
        if not plan_inline or state["planned_all"]:
            return Claim(None)
        plan = self.ahead or self.planner
        planned = plan.next_chunk(
            self.planner.from_text(state["frontier"]), self.planner.from_text(run.pk_end), size
        )
        if planned is None:
            runs.update(planned_all=True)
            return Claim(None)
        return Claim(planned)

    def plan(self, run: Run, size: int) -> bool:
        """Parallel mode: append one pending chunk in its own transaction. False when none left."""
        with transaction.atomic(using=self.using):
            runs = Run.objects.using(self.using).filter(pk=run.pk)
            state = runs.select_for_update().values("frontier", "planned_all").get()
            if state["planned_all"]:
                return False
            planned = self.planner.next_chunk(
                self.planner.from_text(state["frontier"]), self.planner.from_text(run.pk_end), size
            )
            if planned is None:
                runs.update(planned_all=True)
                return False
            ChunkRow.objects.using(self.using).create(
                run=run,
                lo=self.planner.to_text(planned.lo),
                hi=self._key(planned.hi),
                rows_scanned=planned.keys,
            )
            runs.update(frontier=self.planner.to_text(planned.hi))
            return True

    def split(self, chunk: PlannedChunk) -> None:
        """Parallel mode, after a timeout: cut a pending chunk in two so the retry is smaller."""
        if chunk.id is None:
            return
        with transaction.atomic(using=self.using):
            row = (
                ChunkRow.objects.using(self.using)
                .select_for_update(skip_locked=True)
                .filter(pk=chunk.id, status=ChunkRow.Status.PENDING)
                .first()
            )
            if row is None:
                return
            mid = self.planner.midpoint(chunk)
            if mid is None:
                return
            half = row.rows_scanned // 2
            ChunkRow.objects.using(self.using).create(
                run_id=row.run_id,
                lo=self.planner.to_text(mid),
                hi=row.hi,
                rows_scanned=row.rows_scanned - half,
            )
            row.hi = self._key(mid)
            row.rows_scanned = half
            row.save(using=self.using, update_fields=["hi", "rows_scanned"])

    def complete(self, run: Run, chunk: PlannedChunk, work: ChunkWork, seconds: float) -> None:
        """In the chunk's transaction: record it done and advance the run's counters."""
        now = timezone.now()
        chunks = ChunkRow.objects.using(self.using)
        counters: dict[str, Any] = {
            "rows_scanned": F("rows_scanned") + chunk.keys,
            "rows_changed": F("rows_changed") + work.rows_changed,
            "chunks_done": F("chunks_done") + 1,
            "work_seconds": F("work_seconds") + seconds,
            "heartbeat_at": now,
        }
        if chunk.id is None:
            chunks.create(
                run=run,
                lo=self.planner.to_text(chunk.lo),
                hi=self._key(chunk.hi),
                status=ChunkRow.Status.DONE,
                rows_scanned=chunk.keys,
                rows_changed=work.rows_changed,
                worker=self.worker_name,
                finished_at=now,
            )
            counters["frontier"] = self.planner.to_text(chunk.hi)
        else:
            chunks.filter(pk=chunk.id).update(
                status=ChunkRow.Status.DONE,
                rows_changed=work.rows_changed,
                worker=self.worker_name,
                finished_at=now,
            )
        Run.objects.using(self.using).filter(pk=run.pk).update(**counters)
