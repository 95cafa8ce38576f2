from django.db import models


class BlogPost(models.Model):
    title = models.CharField(max_length=255)
    author = models.CharField(max_length=60)
    # Filled from author by the data migration 0003. db_default keeps the column's DEFAULT in
    # the database, so rows inserted by plain SQL (scripts/seed_blogposts.sql) get "" too.
    author_slug = models.CharField(max_length=60, blank=True, default="", db_default="")

    def __str__(self) -> str:
        return self.title
