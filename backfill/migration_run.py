"""Running a ``RunBackfill`` in one direction: which migration owns it (its run's name),
whether the router and the migration's transaction allow it, whether it is deferred, then the
backfill through the API, with progress and the outcome on stderr (``backfill.edge``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

from django.core.management.base import CommandError
from django.db import models, router
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.state import ProjectState
from django.db.models import QuerySet

from backfill import database, deferred, edge, events, ledger, recipes
from backfill.conf import get_setting
from backfill.exceptions import BackfillError, BadInput, InsideTransaction
from backfill.models import Run
from backfill.result import Result

if TYPE_CHECKING:
    from backfill.operations import RunBackfill, Transform

logger = logging.getLogger("backfill")


class MigrationName(NamedTuple):
    app_label: str
    name: str


def callable_name(value: Any) -> Any:
    """A callable as its dotted path (how a run's name and a recipe refer to it)."""
    if callable(value) and not isinstance(value, str):
        return f"{value.__module__}.{value.__qualname__}"
    return value


class MigrationRun:
    def __init__(
        self,
        operation: RunBackfill,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        state: ProjectState,
    ) -> None:
        self.op = operation
        self.app_label = app_label
        self.schema_editor = schema_editor
        self.state = state

    def run(
        self,
        strategy: str,
        values: dict[str, Any] | None,
        transform: Transform | None,
        *,
        reverse: bool,
    ) -> None:
        """Run the backfill in one direction (``reverse``: unapplying), or record it deferred."""
        migration, index = self._owner(self.app_label)
        where = (
            f"RunBackfill #{index + 1} of migration {migration.app_label}.{migration.name}"
            if migration is not None
            else f"RunBackfill of {self.app_label}.{self.op.model_name}"
        )
        alias = self.schema_editor.connection.alias
        try:
            model = self._model(self.app_label, self.state)
            if not self._allowed(model, alias):
                return
            self._check_transaction(self.schema_editor)
            name = self._run_name(self.app_label, migration, index, reverse)
            rows = self._rows(
                model,
                alias,
                where,
                other=self._run_name(self.app_label, migration, index, not reverse),
            )
            if rows is None:
                return
            result = self._work(rows, name, strategy, values, transform, reverse=reverse)
        except BackfillError as exc:
            result_of = getattr(exc, "result", None)
            if isinstance(result_of, Result) and self.op.progress != "none":
                self._say(edge.summary_line(result_of))
            code, message = edge.failure(exc, alias, command=False)
            raise CommandError(f"{where}: {message}", returncode=code) from exc
        if result is not None and self.op.progress != "none":
            done = result.message
            if result.status != "already completed":
                done = f"{done.rstrip('.')}: {edge.summary_line(result)}"
            total = edge.run_total(result)
            if total:
                done += "; " + total.replace("run total: scanned", "run total")
            self._say(done)

    def _allowed(self, model: type[models.Model], alias: str) -> bool:
        """Whether the database router lets this migration write the model on ``alias``."""
        return bool(
            router.allow_migrate(
                alias,
                model._meta.app_label,
                model_name=model._meta.model_name,
                model=model,
                **self.op.hints,
            )
        )

    def _rows(
        self, model: type[models.Model], alias: str, where: str, *, other: str
    ) -> QuerySet[Any] | None:
        """The model's rows to backfill; None when there are none (nothing to record)."""
        connection = self.schema_editor.connection
        ledger_ready = Run._meta.db_table in connection.introspection.table_names()
        if ledger_ready:
            # Once this direction runs, the other direction's run (completed or stopped)
            # no longer describes the data: re-applying after an unapply must run again.
            ledger.forget_run(other, alias)
        rows = model._base_manager.using(alias)
        if not rows.exists():
            # A fresh database (a new checkout, the test database) has nothing to fill;
            # recording an empty run there would only clutter the run list.
            logger.info("%s: %s is empty; nothing to backfill.", where, model._meta.label)
            return None
        if not ledger_ready:
            raise BadInput(
                f"The backfill run ledger ({Run._meta.db_table}) is not migrated on database "
                f"{alias!r}. Add ('backfill', '0001_initial') to this migration's "
                "dependencies so backfill's own migrations run first."
            )
        return rows

    def _work(
        self,
        rows: QuerySet[Any],
        name: str,
        strategy: str,
        values: dict[str, Any] | None,
        transform: Transform | None,
        *,
        reverse: bool,
    ) -> Result | None:
        """Record the run as deferred (None), or run it now and return its Result."""
        connection = self.schema_editor.connection
        alias = connection.alias
        recipe = None if reverse or self.op.defer is False else self._recipe(self.app_label)
        if recipe is not None:
            recipes.validate(recipe, rows.model, alias)
            estimate = self._deferral(connection, rows.model)
            if estimate is not None:
                self._record(name, recipe, rows.model, alias, estimate)
                return None
        reporter = self._reporter()
        try:
            return self._call(self._queryset(rows), strategy, values, transform, name, reporter)
        finally:
            if recipe is not None:
                # Verification (RequireBackfill, backfill_verify) rebuilds the run from it.
                ledger.keep_recipe(name, recipe, using=alias)

    def _recipe(self, app_label: str) -> dict[str, Any]:
        try:
            return self.op.recipe(app_label)
        except ValueError as exc:
            raise BadInput(str(exc)) from None

    def _deferral(self, connection: Any, model: type[models.Model]) -> int | None:
        """The table's estimated rows when the run is to be deferred, else None (run inline)."""
        estimate = deferred.estimated_rows(connection, model)
        if self.op.defer is True:
            return estimate
        threshold = self.op.defer_above
        if threshold is None:
            threshold = int(get_setting("DEFER_ABOVE_ROWS"))
        return estimate if estimate > threshold else None

    def _record(
        self, name: str, recipe: dict[str, Any], model: type[models.Model], alias: str, rows: int
    ) -> None:
        run, created = ledger.record_pending(name, recipe, using=alias, estimated_rows=rows)
        if run.status == Run.Status.COMPLETED:
            message = f"Run {name!r} already completed; nothing to do."
        else:
            state = "Recorded" if created else f"Run is {run.status}; kept"
            message = (
                f"{state} run {name!r} as deferred (~{rows:,} rows in {model._meta.label} on "
                f"{database.describe(alias)}). Work it after deploy with: "
                f"{deferred.pending_command(name, alias)}"
            )
        if self.op.progress != "none":
            self._say("")
            self._say(message)
        else:
            logger.info(message)

    def _owner(self, app_label: str) -> tuple[MigrationName | None, int]:
        """The migration this operation belongs to, and the operation's index in it.

        Operations are not told which migration they belong to. A loaded migration keeps its
        operations as the ``operations`` of its module's ``Migration`` class (the loader's
        instance copies that list, not the operations), so the owner is the migration module
        of ``app_label`` whose list holds this very object. Without one (an operation run by
        hand) the run name falls back to a digest of the operation.
        """
        package, _ = MigrationLoader.migrations_module(app_label)
        if package is None:
            return None, 0
        for module_name, module in list(sys.modules.items()):
            if module is None or not module_name.startswith(package + "."):
                continue
            operations = getattr(getattr(module, "Migration", None), "operations", None) or []
            for index, operation in enumerate(operations):
                if operation is self.op:
                    return MigrationName(app_label, module_name.rpartition(".")[2]), index
        return None, 0

    def _run_name(
        self, app_label: str, migration: MigrationName | None, index: int, reverse: bool
    ) -> str:
        suffix = " reverse" if reverse else ""
        if self.op.options.get("name"):
            return f"{self.op.options['name']}{suffix}"
        if migration is not None:
            return f"migration {migration.app_label}.{migration.name} #{index + 1}{suffix}"
        _, args, kwargs = self.op.deconstruct()
        identity = json.dumps(
            [app_label, args, {k: callable_name(v) for k, v in kwargs.items()}],
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha1(identity.encode()).hexdigest()[:8]
        return f"migration {app_label}.{self.op.model_name} {digest}{suffix}"

    def _model(self, app_label: str, state: ProjectState) -> type[models.Model]:
        label, _, name = self.op.model_name.rpartition(".")
        label = label or app_label
        try:
            return state.apps.get_model(label, name)
        except LookupError:
            raise BadInput(
                f"Model {label}.{name} is not in this migration's state. Check the model name "
                f"and that the migration depends on the migration creating it."
            ) from None

    def _check_transaction(self, schema_editor: BaseDatabaseSchemaEditor) -> None:
        if schema_editor.atomic_migration:
            raise InsideTransaction(
                "it cannot run in an atomic migration: a backfill commits chunk by chunk so it "
                "can resume. Set `atomic = False` on the Migration class (and keep schema "
                "changes in a separate migration). Nothing was written."
            )
        if schema_editor.connection.in_atomic_block:
            raise InsideTransaction(
                "it cannot run inside a transaction (atomic block): a backfill commits chunk by "
                "chunk. Set `atomic = False` on the Migration class and run migrate outside "
                "transaction.atomic(). Nothing was written."
            )

    def _queryset(self, rows: QuerySet[Any]) -> QuerySet[Any]:
        return recipes.apply_lookups(rows, self.op.filter, self.op.exclude)

    def _call(
        self,
        rows: QuerySet[Any],
        strategy: str,
        values: dict[str, Any] | None,
        transform: Transform | None,
        name: str,
        reporter: events.Reporter,
    ) -> Result:
        options: dict[str, Any] = {**self.op.options, "name": name, "reporter": reporter}
        return recipes.call(rows, strategy, values, transform, self.op.fields, options)

    # -- output --------------------------------------------------------------------------

    def _reporter(self) -> events.Reporter:
        if self.op.progress == "none":
            return events.ignore
        # migrate leaves "  Applying app.0003_x..." unterminated on stdout; start below it.
        self._say("")
        return edge.reporter_for(sys.stderr, self.op.progress)

    @staticmethod
    def _say(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
