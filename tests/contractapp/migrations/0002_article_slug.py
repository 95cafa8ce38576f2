"""Expand: the column, nullable."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("contractapp", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="article", name="slug", field=models.CharField(max_length=120, null=True)
        ),
    ]
