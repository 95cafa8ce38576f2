"""Fill BlogPost.author_slug from author with RunBackfill: chunked, resumable, with progress.

On PostgreSQL, 0002 added the column instantly (a constant default is metadata only, no table
rewrite); this migration then rewrites the rows in short transactions of ``batch_size`` rows.
Stopped halfway (Ctrl-C, SIGTERM, a deploy timeout), it is not recorded as applied and the next
``manage.py migrate`` resumes from the checkpoint.
"""

from django.db import migrations
from django.utils.text import slugify

from backfill.operations import RunBackfill


def fill_author_slug(post):
    # post is a historical BlogPost: fields only, no custom methods.
    post.author_slug = slugify(post.author)[:60]


class Migration(migrations.Migration):
    # A backfill commits chunk by chunk; an atomic migration is refused before anything runs.
    atomic = False

    dependencies = [
        ("blog", "0002_blogpost_author_slug"),
        # The run ledger (checkpoints) lives in backfill's tables.
        ("backfill", "0001_initial"),
    ]

    operations = [
        RunBackfill(
            "BlogPost",
            transform=fill_author_slug,
            fields=["author", "author_slug"],
            reverse_set={"author_slug": ""},
            batch_size=5000,
            # Every row is rewritten: VACUUM after each 10% so PostgreSQL reuses the dead
            # tuples instead of doubling the table.
            vacuum_every=0.1,
        ),
    ]
