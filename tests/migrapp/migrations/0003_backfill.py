"""Data migrations on historical models: RunBackfill, and the Python API inside RunPython."""

from django.db import migrations
from django.utils.text import slugify

import backfill
from backfill.operations import RunBackfill


def set_slug(ticket):
    ticket.slug = slugify(ticket.name)[:60]


def fill_slugs(apps, schema_editor):
    Ticket = apps.get_model("migrapp", "Ticket")
    tickets = Ticket.objects.using(schema_editor.connection.alias)
    if not tickets.exists():
        return  # a fresh database: nothing to fill, and no run worth recording
    backfill.iterate(tickets.only("name", "slug"), transform=set_slug, batch_size=10)


class Migration(migrations.Migration):
    # Chunks commit one by one, so the migration cannot be one transaction.
    atomic = False

    dependencies = [("migrapp", "0002_ticket_slug"), ("backfill", "0001_initial")]

    operations = [
        RunBackfill(
            "Ticket",
            transform="tests.migrapp.transforms.count_hit",
            fields=["hits"],
            reverse_transform="tests.migrapp.transforms.uncount_hit",
            batch_size=10,
        ),
        migrations.RunPython(fill_slugs, migrations.RunPython.noop),
    ]
