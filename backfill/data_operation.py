"""What the two migration operations share: they touch data only, never the schema, and
Django's four-argument forwards/backwards calls reduce to the two arguments they use."""

from __future__ import annotations

from django.db.backends.base.schema import BaseDatabaseSchemaEditor as Editor
from django.db.migrations.operations.base import Operation, OperationCategory
from django.db.migrations.state import ProjectState as State


class DataOperation(Operation):
    category = OperationCategory.PYTHON
    reduces_to_sql = False

    def state_forwards(self, app_label: str, state: State) -> None:
        """Data only: the project state does not change."""

    def database_forwards(self, app_label: str, editor: Editor, old: State, new: State) -> None:
        self.forwards(app_label, editor, old)

    def database_backwards(self, app_label: str, editor: Editor, old: State, new: State) -> None:
        self.backwards(app_label, editor, old)

    def forwards(self, app_label: str, schema_editor: Editor, state: State) -> None:
        """Apply the operation; ``state`` is the project state before it."""
        raise NotImplementedError

    def backwards(self, app_label: str, schema_editor: Editor, state: State) -> None:
        """Unapply the operation; ``state`` is the project state before it."""
        raise NotImplementedError
