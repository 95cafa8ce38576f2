from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class BackfillConfig(AppConfig):
    name = "backfill"
    verbose_name = "Backfills"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Like admin.py: every installed app may keep its reviewed backfills in backfills.py.
        autodiscover_modules("backfills")
