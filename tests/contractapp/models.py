"""The model of tests/contractapp: ``slug`` went nullable (0002), filled (0003), NOT NULL (0004)."""

from __future__ import annotations

from django.db import models


class Article(models.Model):
    title = models.CharField(max_length=100)
    slug = models.CharField(max_length=120)

    def __str__(self) -> str:
        return self.title
