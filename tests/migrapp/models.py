"""The model that tests/migrapp's data migrations backfill."""

from __future__ import annotations

from django.db import models


class Ticket(models.Model):
    """``hits`` counts the forward backfill's visits: every row exactly once, or a bug."""

    name = models.CharField(max_length=50)
    hits = models.IntegerField(default=0)
    slug = models.CharField(max_length=60, blank=True, default="")

    def __str__(self) -> str:
        return self.name
