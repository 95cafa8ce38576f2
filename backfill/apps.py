from __future__ import annotations

from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.utils.module_loading import autodiscover_modules


class BackfillConfig(AppConfig):
    name = "backfill"
    verbose_name = "Backfills"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from backfill.expressions import register_sqlite_functions

        # Like admin.py: every installed app may keep its reviewed backfills in backfills.py.
        autodiscover_modules("backfills")
        # Expressions give PostgreSQL's results on SQLite too (see backfill.expressions).
        connection_created.connect(register_sqlite_functions, dispatch_uid="backfill-sqlite")
