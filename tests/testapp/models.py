"""Models for the test suite: the primary-key kinds, table shapes and fields a backfill meets."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from django.db import models

# For the start-up signal test: say that Django is loading the models, then take a while.
if os.environ.get("BACKFILL_TEST_STARTUP_MARKER"):
    Path(os.environ["BACKFILL_TEST_STARTUP_MARKER"]).write_text("loading")
    time.sleep(float(os.environ.get("BACKFILL_TEST_STARTUP_PAUSE", "2")))


class UUIDItem(models.Model):
    """A UUID primary key: keyset order is not insertion order."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=50)
    flag = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.name


class CodeItem(models.Model):
    """A text primary key."""

    code = models.CharField(primary_key=True, max_length=20)
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.code


class SparseItem(models.Model):
    """A big-integer primary key with gaps chosen by the test."""

    id = models.BigIntegerField(primary_key=True)
    name = models.CharField(max_length=50, blank=True)
    views = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"SparseItem {self.pk}"


class Place(models.Model):
    """The parent of a multi-table-inheritance pair."""

    name = models.CharField(max_length=50)
    city = models.CharField(max_length=50, default="")

    def __str__(self) -> str:
        return self.name


class Restaurant(Place):
    """An MTI child: its columns live in its own table, joined to Place by place_ptr_id."""

    serves_pizza = models.BooleanField(default=False)
    rating = models.IntegerField(null=True)


class Column(models.Model):
    """Table and column names that only work quoted: a space, a hyphen, capitals, a keyword.

    (Django does not escape a double quote inside a name, so no name here contains one.)
    """

    label = models.CharField(max_length=50, db_column="Label Text")
    amount = models.IntegerField(null=True, db_column="amt")

    class Meta:
        db_table = "testapp Weird-Table select"

    def __str__(self) -> str:
        return self.label


class Counter(models.Model):
    """Counts how often a transform touched each row: every row exactly once, or a bug."""

    name = models.CharField(max_length=50)
    hits = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}: {self.hits}"


class Tagged(models.Model):
    """An M2M field (not a column: bad input for --set) and a JSON field."""

    name = models.CharField(max_length=50)
    tags = models.ManyToManyField("self", blank=True)
    data = models.JSONField(default=dict)

    def __str__(self) -> str:
        return self.name


class Ticket(models.Model):
    """A unique column: a backfill that gives two rows one code is refused by the database."""

    code = models.CharField(max_length=20, unique=True)
    seat = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.code


class TenantItem(models.Model):
    """A composite primary key (tenant_id, id): keyset order is tuple order, not id order."""

    pk = models.CompositePrimaryKey("tenant_id", "id")
    tenant_id = models.IntegerField()
    id = models.IntegerField()
    name = models.CharField(max_length=50)
    hits = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"TenantItem {self.tenant_id}/{self.id}"


class Attachment(models.Model):
    """A binary column: MySQL receives its bytes as base64 and decodes them in the statement."""

    name = models.CharField(max_length=50)
    data = models.BinaryField(null=True)

    def __str__(self) -> str:
        return self.name
