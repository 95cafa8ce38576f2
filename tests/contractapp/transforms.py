"""The transform that tests/contractapp's deferred run names by dotted path."""

from __future__ import annotations

from typing import Any

from django.utils.text import slugify


def fill_slug(article: Any) -> None:
    article.slug = slugify(article.title)
