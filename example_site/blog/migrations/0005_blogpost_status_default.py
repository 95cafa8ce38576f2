"""Deploy 2: new rows get a status. The column's DEFAULT is a catalog change on PostgreSQL."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("blog", "0004_blogpost_status")]

    operations = [
        migrations.AlterField(
            model_name="blogpost",
            name="status",
            field=models.CharField(
                choices=[("draft", "draft"), ("published", "published")],
                db_default="published",
                default="published",
                max_length=10,
                null=True,
            ),
        ),
    ]
