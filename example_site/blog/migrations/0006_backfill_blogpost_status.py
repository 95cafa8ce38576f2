"""Deploy 2, backfill: the rows that predate the column become 'published'.

``defer="auto"``: on a table of more than ``BACKFILL["DEFER_ABOVE_ROWS"]`` rows (estimated by
the planner, no COUNT(*)) the run is recorded as pending and ``migrate`` goes on at once; work it
after the deploy with ``python manage.py backfill_pending``. A smaller table is filled here,
inline. An empty table (a fresh database) records nothing.
"""

from django.db import migrations

from backfill.operations import RunBackfill


class Migration(migrations.Migration):
    # A backfill commits chunk by chunk; an atomic migration is refused before anything runs.
    atomic = False

    dependencies = [
        ("blog", "0005_blogpost_status_default"),
        # The run ledger, with pending runs and their recipes.
        ("backfill", "0002_run_pending_recipe"),
    ]

    operations = [
        RunBackfill(
            "BlogPost",
            set={"status": "published"},
            filter={"status__isnull": True},
            defer="auto",
            name="blog: BlogPost.status",
            # Nothing to undo: unapplying 0004 drops the column.
            reverse_set={"status": None},
        ),
    ]
