"""Contract: wait for the run, then NOT NULL."""

from django.db import migrations, models

from backfill.operations import RequireBackfill


class Migration(migrations.Migration):
    dependencies = [("contractapp", "0003_fill_slug")]

    operations = [
        RequireBackfill("contractapp: slug"),
        migrations.AlterField(
            model_name="article", name="slug", field=models.CharField(max_length=120)
        ),
    ]
