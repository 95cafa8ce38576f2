"""Backfill, deferred: recorded as pending, worked by backfill_pending."""

from django.db import migrations

from backfill.operations import RunBackfill


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("contractapp", "0002_article_slug"), ("backfill", "0002_run_pending_recipe")]

    operations = [
        RunBackfill(
            "Article",
            transform="tests.contractapp.transforms.fill_slug",
            fields=["title", "slug"],
            needs={"slug__isnull": True},
            defer=True,
            batch_size=10,
            name="contractapp: slug",
            reverse_set={"slug": None},
        ),
    ]
