"""The blog's reviewed backfills, discovered by the backfill app at start-up.

``manage.py backfill_iterate blog.BlogPost --only author`` runs ``normalize_author`` (the only
instance transform registered for BlogPost); ``backfill_cursor blog.BlogPost --only author``
runs ``normalize_author_row``.
"""

from __future__ import annotations

from typing import Any

import backfill
from example_site.blog.models import BlogPost


def normalized(author: str) -> str:
    """Trim and title-case an author name; applying it twice changes nothing."""
    return " ".join(author.split()).title()


@backfill.register("blog.BlogPost")
def normalize_author(post: BlogPost) -> None:
    post.author = normalized(post.author)


@backfill.register("blog.BlogPost", rows=True)
def normalize_author_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"author": normalized(row["author"])}
