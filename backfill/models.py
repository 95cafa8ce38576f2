"""The run ledger: one Run per backfill, one Chunk per planned key range, one Worker per process."""

from __future__ import annotations

from django.db import models


class Run(models.Model):
    class Status(models.TextChoices):
        # Recorded by a deferred RunBackfill; worked later by backfill_pending.
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        PAUSED = "paused", "paused"
        STOPPED = "stopped", "stopped"
        COMPLETED = "completed", "completed"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    class Request(models.TextChoices):
        NONE = "", "none"
        PAUSE = "pause", "pause"
        CANCEL = "cancel", "cancel"

    name = models.CharField(max_length=200, unique=True)
    strategy = models.CharField(max_length=20)
    model_label = models.CharField(max_length=200)
    spec = models.JSONField(default=dict, help_text="What the run does: transform, filters.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    requested = models.CharField(
        max_length=10, choices=Request.choices, default=Request.NONE, blank=True
    )
    requested_by = models.CharField(max_length=150, blank=True)
    parallel = models.BooleanField(default=False)
    # Keys are stored as text; NULL (no key) differs from "" (a valid string key).
    pk_end = models.TextField(null=True, help_text="Upper pk bound, fixed when the run started.")  # noqa: DJ001
    frontier = models.TextField(null=True, help_text="Last pk handed to a chunk so far.")  # noqa: DJ001
    planned_all = models.BooleanField(default=False)
    batch_size = models.PositiveIntegerField(default=0)
    estimated_rows = models.BigIntegerField(null=True)
    rows_scanned = models.BigIntegerField(default=0)
    rows_changed = models.BigIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    work_seconds = models.FloatField(default=0.0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True)
    heartbeat_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("control_run", "Can pause and cancel backfill runs")]

    def __str__(self) -> str:
        return self.name

    @property
    def progress(self) -> float | None:
        """Share of the table covered so far, 0..1, against the start-time estimate."""
        if self.status == self.Status.COMPLETED:
            return 1.0
        if not self.estimated_rows:
            return None
        return min(1.0, self.rows_scanned / self.estimated_rows)

    @property
    def rate(self) -> float | None:
        """Rows scanned per second of work."""
        if not self.work_seconds:
            return None
        return self.rows_scanned / self.work_seconds


class RunRecipe(models.Model):
    """A run's backfill as data (``backfill.recipes``), kept by ``RunBackfill(defer=...)``.

    Keyed by the run's name, not a foreign key: the ledger's own queries and deletes never
    touch this table, so a data migration depending only on backfill's first migration still
    runs before this table exists.
    """

    name = models.CharField(max_length=200, unique=True)
    recipe = models.JSONField(help_text="Rebuilt to work the run and to verify it.")
    deferred = models.BooleanField(
        default=False, help_text="Recorded by a migration to be worked after deploy."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Chunk(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        DONE = "done", "done"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="chunks")
    lo = models.TextField(  # noqa: DJ001
        null=True, help_text="Exclusive lower pk bound; empty = table start."
    )
    hi = models.TextField(help_text="Inclusive upper pk bound.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    rows_scanned = models.PositiveIntegerField(default=0)
    rows_changed = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [models.Index(fields=["run", "status", "id"], name="backfill_chunk_claim")]

    def __str__(self) -> str:
        return f"({self.lo}, {self.hi}]"


class Worker(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="workers")
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "host", "pid"], name="backfill_worker_unique")
        ]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"
