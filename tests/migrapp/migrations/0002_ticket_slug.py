"""The schema change, in its own (atomic) migration; 0003 fills the column."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("migrapp", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="ticket",
            name="slug",
            field=models.CharField(blank=True, default="", max_length=60),
        ),
    ]
