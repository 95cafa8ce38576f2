from django.db import models


class BlogPost(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "draft"
        PUBLISHED = "published", "published"

    title = models.CharField(max_length=255)
    author = models.CharField(max_length=60)
    # Filled from author by the data migration 0003. db_default keeps the column's DEFAULT in
    # the database, so rows inserted by plain SQL (scripts/seed_blogposts.sql) get "" too.
    author_slug = models.CharField(max_length=60, blank=True, default="", db_default="")
    # Expand, backfill, contract (docs/migrations.md): 0004 added it nullable, 0006 fills the
    # rows that predate it (deferred to backfill_pending on a big table), 0007 waits for that run
    # and makes it NOT NULL. db_default covers rows inserted by plain SQL (seed_blogposts).
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PUBLISHED, db_default="published"
    )

    def __str__(self) -> str:
        return self.title
