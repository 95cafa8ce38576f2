from django.apps import AppConfig


class ContractAppConfig(AppConfig):
    """Expand, backfill, contract with a transform: a deferred run, then RequireBackfill."""

    name = "tests.contractapp"
    label = "contractapp"
    default_auto_field = "django.db.models.AutoField"
