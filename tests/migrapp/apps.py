from django.apps import AppConfig


class MigrAppConfig(AppConfig):
    """Data migrations that backfill: RunBackfill and the Python API in RunPython."""

    name = "tests.migrapp"
    label = "migrapp"
    default_auto_field = "django.db.models.AutoField"
