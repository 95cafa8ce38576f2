"""Deploy 3, contract: once the backfill is complete and verified, the column is NOT NULL.

RequireBackfill refuses to go on (naming the run, its progress and the command that finishes
it) while the run is pending or rows still hold NULL, so the ALTER below never meets a NULL.
On PostgreSQL, SET NOT NULL takes an ACCESS EXCLUSIVE lock and scans the table once to check it
(see docs/migrations.md, "Deploy 3: contract", for the CHECK ... NOT VALID way around that
scan on very large tables).
"""

from django.db import migrations, models

from backfill.operations import RequireBackfill


class Migration(migrations.Migration):
    dependencies = [("blog", "0006_backfill_blogpost_status")]

    operations = [
        RequireBackfill("blog: BlogPost.status"),
        migrations.AlterField(
            model_name="blogpost",
            name="status",
            field=models.CharField(
                choices=[("draft", "draft"), ("published", "published")],
                db_default="published",
                default="published",
                max_length=10,
            ),
        ),
    ]
