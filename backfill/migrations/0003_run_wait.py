"""Why a run waits, for the admin's run page.

A new table rather than new columns on Run: data migrations that depend only on 0001 keep
working on the ledger before this migration is applied.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("backfill", "0002_run_pending_recipe"),
    ]

    operations = [
        migrations.CreateModel(
            name="RunWait",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                ("reason", models.TextField()),
                ("since", models.DateTimeField(help_text="When this spell of waiting began.")),
            ],
        ),
    ]
