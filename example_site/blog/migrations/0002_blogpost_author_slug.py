from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("blog", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="blogpost",
            name="author_slug",
            field=models.CharField(blank=True, db_default="", default="", max_length=60),
        ),
    ]
