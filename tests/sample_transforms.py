"""Transforms the tests pass by dotted path (``--transform tests.sample_transforms.NAME``)."""

from __future__ import annotations

from typing import Any

from example_site.blog.models import BlogPost

NOT_CALLABLE = 42

# The pk a failing transform raises on; tests set it before a run.
FAIL_ON: dict[str, Any] = {"pk": None}


def shout_author(post: BlogPost) -> None:
    post.author = post.author.upper()


def shout_author_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"author": row["author"].upper()}


def explode(post: BlogPost) -> None:
    if post.pk == FAIL_ON["pk"]:
        raise ValueError(f"boom on {post.pk}")
    post.author = "done"


def explode_row(row: dict[str, Any]) -> dict[str, Any]:
    if row["pk"] == FAIL_ON["pk"]:
        raise ValueError(f"boom on {row['pk']}")
    return {"author": "done"}
