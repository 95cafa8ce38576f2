"""Deferred runs: the ``pending`` status and the recipes of RunBackfill(defer=...).

A new table rather than new columns on Run: data migrations that depend only on 0001 keep
working on the ledger before this migration is applied.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("backfill", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="RunRecipe",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                ("recipe", models.JSONField(help_text="Rebuilt to work the run and to verify it.")),
                (
                    "deferred",
                    models.BooleanField(
                        default=False,
                        help_text="Recorded by a migration to be worked after deploy.",
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.AlterField(
            model_name="run",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "pending"),
                    ("running", "running"),
                    ("paused", "paused"),
                    ("stopped", "stopped"),
                    ("completed", "completed"),
                    ("failed", "failed"),
                    ("cancelled", "cancelled"),
                ],
                default="running",
                max_length=20,
            ),
        ),
    ]
