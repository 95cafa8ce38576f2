"""Deploy 1, expand: the column, nullable and without a default.

On PostgreSQL, adding a nullable column without a default changes only the catalog: a brief
ACCESS EXCLUSIVE lock, no table rewrite. (With a default, Django would fill every existing row
in this migration.) The code deployed with it must cope with NULL.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("blog", "0003_fill_author_slug")]

    operations = [
        migrations.AddField(
            model_name="blogpost",
            name="status",
            field=models.CharField(
                choices=[("draft", "draft"), ("published", "published")],
                max_length=10,
                null=True,
            ),
        ),
    ]
