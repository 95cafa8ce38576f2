"""``RunBackfill``: a backfill as a migration operation that ``migrate`` resumes after a stop.

::

    from backfill.operations import RunBackfill

    class Migration(migrations.Migration):
        atomic = False  # chunks commit one by one; an atomic migration is refused
        dependencies = [("blog", "0002_blogpost_author_slug"), ("backfill", "0001_initial")]
        operations = [
            RunBackfill("BlogPost", transform="blog.slugs.fill_author_slug", fields=["author"],
                        reverse_set={"author_slug": ""}),
        ]

The operation runs on the migration's database with the historical model of the migration's
state, through the same engine as ``backfill.update/iterate/cursor``. Its run is named after the
migration and the operation's position in it, so a ``migrate`` stopped by a signal (or by
``max_runtime``) leaves the migration unrecorded and the next ``migrate`` resumes from the
checkpoint. Failures reach ``migrate`` as ``CommandError`` with the backfill exit codes.

With ``defer=True`` (or ``"auto"`` above a row estimate) the operation records the run as
pending, described by data (``backfill.recipes``), and returns: ``backfill_pending`` works it
after deploy, and ``RequireBackfill`` in a later migration waits for it (``backfill.deferred``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Unpack

from django.core.management.base import CommandError
from django.db import models, router
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations.base import Operation, OperationCategory
from django.db.migrations.state import ProjectState
from django.db.models import Q, QuerySet

from backfill import database, deferred, edge, events, recipes
from backfill.conf import get_setting
from backfill.exceptions import BackfillError, BadInput, InsideTransaction
from backfill.models import Run
from backfill.options import MIGRATION_KEYWORDS, MigrationOptions, check_keywords, name_keywords
from backfill.require import RequireBackfill
from backfill.result import Result

__all__ = ["RequireBackfill", "RunBackfill"]

logger = logging.getLogger("backfill")

STRATEGIES = ("update", "iterate", "cursor")
PROGRESS_MODES = ("auto", "bar", "log", "none")
DEFER_MODES = (False, True, "auto")
Transform = str | Callable[..., Any]
Lookups = Mapping[str, Any] | Q


class MigrationName(NamedTuple):
    app_label: str
    name: str


def _callable_name(value: Any) -> Any:
    if callable(value) and not isinstance(value, str):
        return f"{value.__module__}.{value.__qualname__}"
    return value


class RunBackfill(Operation):
    """Backfill one model's rows inside ``migrate``, chunk by chunk, resumably.

    ``model_name`` is a model of the migration's app (``"BlogPost"``) or ``"app_label.Model"``.
    Give ``set={field: value or expression}`` or ``transform`` (a callable or dotted path; an
    instance transform for ``iterate``, a row transform for ``cursor``). ``strategy`` defaults
    to ``"update"`` with ``set`` and ``"iterate"`` with a transform. ``fields`` limits the
    columns a transform reads. ``filter`` / ``exclude`` are Django lookups (a dict or a ``Q``).
    ``reverse_set`` / ``reverse_transform`` make the operation reversible. ``progress`` is
    ``auto`` (a bar when stderr is a terminal, log lines otherwise), ``bar``, ``log`` or
    ``none``. ``defer`` is ``False`` (run inline, the default), ``True`` (record the run as
    pending for ``backfill_pending``) or ``"auto"`` (defer when the table's estimated rows
    exceed ``defer_above``, default ``BACKFILL["DEFER_ABOVE_ROWS"]``); a deferred backfill must
    be data (see ``backfill.recipes``). ``needs`` is the lookup of rows still needing the change
    (``{"author_slug__isnull": True}``), which verification counts for a transform.
    The other keyword arguments are run options, as for ``backfill.update``. Not
    among them: ``dry_run`` (the migration would be recorded with nothing written),
    ``restart`` (every re-run of migrate would start over instead of resuming) and ``workers``
    (one migrate process works the run).

    Construction raises ``ValueError`` / ``TypeError`` for a malformed operation. Running it
    raises ``CommandError`` whose ``returncode`` is the backfill exit code (2: bad input or an
    atomic migration, nothing written; 1: a chunk failed; 3: stopped early, resumable; 4: the
    run is busy), chained to the backfill exception.
    """

    category = OperationCategory.PYTHON
    reduces_to_sql = False
    # Migration.apply wraps an operation in atomic() unless this is False; a backfill commits
    # its own chunks.
    atomic = False

    def __init__(
        self,
        model_name: str,
        *,
        set: Mapping[str, Any] | None = None,
        transform: Transform | None = None,
        strategy: str | None = None,
        fields: Sequence[str] | None = None,
        filter: Lookups | None = None,
        exclude: Lookups | None = None,
        reverse_set: Mapping[str, Any] | None = None,
        reverse_transform: Transform | None = None,
        progress: str = "auto",
        defer: bool | str = False,
        defer_above: int | None = None,
        needs: Lookups | None = None,
        hints: Mapping[str, Any] | None = None,
        elidable: bool = False,
        **run_options: Unpack[MigrationOptions],
    ) -> None:
        # The run options of the table (backfill.options) that a migration can honour;
        # deconstruct() writes back the ones given.
        check_keywords("RunBackfill", run_options, MIGRATION_KEYWORDS)
        if set is not None and transform is not None:
            raise ValueError("RunBackfill takes set= or transform=, not both.")
        if set is None and transform is None:
            raise ValueError("RunBackfill needs set={field: value} or transform=callable/path.")
        if reverse_set is not None and reverse_transform is not None:
            raise ValueError("RunBackfill takes reverse_set= or reverse_transform=, not both.")
        chosen = strategy or ("update" if set is not None else "iterate")
        if chosen not in STRATEGIES:
            raise ValueError(
                f"RunBackfill strategy {strategy!r} is not one of {', '.join(STRATEGIES)}."
            )
        if chosen == "update" and (transform is not None or reverse_transform is not None):
            raise ValueError(
                "RunBackfill strategy 'update' runs SQL only: use set= / reverse_set=, or "
                "strategy='iterate' for a transform."
            )
        if chosen == "update" and fields:
            raise ValueError("RunBackfill fields= applies to iterate and cursor, not update.")
        if progress not in PROGRESS_MODES:
            raise ValueError(
                f"RunBackfill progress {progress!r} is not one of {', '.join(PROGRESS_MODES)}."
            )
        if defer not in DEFER_MODES or not isinstance(defer, (bool, str)):
            raise ValueError(f"RunBackfill defer={defer!r} is not one of False, True, 'auto'.")
        if defer_above is not None and (
            isinstance(defer_above, bool) or not isinstance(defer_above, int) or defer_above < 0
        ):
            raise ValueError(
                f"RunBackfill defer_above={defer_above!r} is not a number of rows (0 or more)."
            )
        self.model_name = model_name
        self.set = dict(set) if set is not None else None
        self.transform = transform
        self.strategy = chosen
        self.strategy_given = strategy
        self.fields = list(fields) if fields else None
        self.filter = filter
        self.exclude = exclude
        self.reverse_set = dict(reverse_set) if reverse_set is not None else None
        self.reverse_transform = reverse_transform
        self.progress = progress
        self.defer = defer
        self.defer_above = defer_above
        self.needs = needs
        self.hints = dict(hints or {})
        self.elidable = elidable  # type: ignore[misc]
        self.options: dict[str, Any] = {k: v for k, v in run_options.items() if v is not None}
        if defer is not False:
            # Refuse what cannot be stored now, when the migration loads, not after deploy.
            self.recipe("app")

    # -- what Django asks of an operation ----------------------------------------------

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        optional: dict[str, Any] = {
            "set": self.set,
            "transform": self.transform,
            "strategy": self.strategy_given,
            "fields": self.fields,
            "filter": self.filter,
            "exclude": self.exclude,
            "reverse_set": self.reverse_set,
            "reverse_transform": self.reverse_transform,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if self.progress != "auto":
            kwargs["progress"] = self.progress
        if self.defer is not False:
            kwargs["defer"] = self.defer
        if self.defer_above is not None:
            kwargs["defer_above"] = self.defer_above
        if self.needs is not None:
            kwargs["needs"] = self.needs
        if self.hints:
            kwargs["hints"] = self.hints
        if self.elidable:
            kwargs["elidable"] = True
        kwargs.update(self.options)
        return (self.__class__.__qualname__, [self.model_name], kwargs)

    @property
    def reversible(self) -> bool:  # type: ignore[override]
        return self.reverse_set is not None or self.reverse_transform is not None

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        """Data only: the project state does not change."""

    def describe(self) -> str:
        if self.set is not None:
            what = "set " + ", ".join(self.set)
        else:
            what = str(_callable_name(self.transform))
        return f"Backfill {self.model_name} ({self.strategy}): {what}"

    def model_label(self, app_label: str) -> str:
        label, _, name = self.model_name.rpartition(".")
        return f"{label or app_label}.{name}"

    def recipe(self, app_label: str) -> dict[str, Any]:
        """The forward backfill as data (``backfill.recipes``); ValueError when it cannot be."""
        return recipes.build(
            model_label=self.model_label(app_label),
            strategy=self.strategy,
            set=self.set,
            transform=self.transform,
            fields=self.fields,
            filter=self.filter,
            exclude=self.exclude,
            needs=self.needs,
            options=self.options,
        )

    @property
    def migration_name_fragment(self) -> str:
        return f"backfill_{self.model_name.rsplit('.', 1)[-1].lower()}"

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        self._run(
            app_label,
            schema_editor,
            from_state,
            self.strategy,
            self.set,
            self.transform,
            reverse=False,
        )

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        if not self.reversible:
            raise NotImplementedError(
                "You cannot reverse this operation: give RunBackfill a reverse_set or "
                "reverse_transform."
            )
        # Setting values needs no Python per row: reverse_set always runs as SQL UPDATEs.
        strategy = "update" if self.reverse_set is not None else self.strategy
        self._run(
            app_label,
            schema_editor,
            from_state,
            strategy,
            self.reverse_set,
            self.reverse_transform,
            reverse=True,
        )

    # -- running -------------------------------------------------------------------------

    def _run(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        state: ProjectState,
        strategy: str,
        values: dict[str, Any] | None,
        transform: Transform | None,
        *,
        reverse: bool,
    ) -> None:
        migration, index = self._owner(app_label)
        where = (
            f"RunBackfill #{index + 1} of migration {migration.app_label}.{migration.name}"
            if migration is not None
            else f"RunBackfill of {app_label}.{self.model_name}"
        )
        connection = schema_editor.connection
        alias = connection.alias
        try:
            model = self._model(app_label, state)
            if not router.allow_migrate(
                alias,
                model._meta.app_label,
                model_name=model._meta.model_name,
                model=model,
                **self.hints,
            ):
                return
            self._check_transaction(schema_editor)
            name = self._run_name(app_label, migration, index, reverse)
            ledger_ready = Run._meta.db_table in connection.introspection.table_names()
            if ledger_ready:
                # Once this direction runs, the other direction's run (completed or stopped)
                # no longer describes the data: re-applying after an unapply must run again.
                other = self._run_name(app_label, migration, index, not reverse)
                Run.objects.using(alias).filter(name=other).delete()
            rows = model._base_manager.using(alias)
            if not rows.exists():
                # A fresh database (a new checkout, the test database) has nothing to fill;
                # recording an empty run there would only clutter the run list.
                logger.info("%s: %s is empty; nothing to backfill.", where, model._meta.label)
                return
            if not ledger_ready:
                raise BadInput(
                    f"The backfill run ledger ({Run._meta.db_table}) is not migrated on database "
                    f"{alias!r}. Add ('backfill', '0001_initial') to this migration's "
                    "dependencies so backfill's own migrations run first."
                )
            recipe = None if reverse or self.defer is False else self._recipe(app_label)
            if recipe is not None:
                recipes.validate(recipe, model, alias)
                estimate = self._deferral(connection, model)
                if estimate is not None:
                    self._record(name, recipe, model, alias, estimate)
                    return
            reporter = self._reporter()
            try:
                result = self._call(
                    self._queryset(rows), strategy, values, transform, name, reporter
                )
            finally:
                if recipe is not None:
                    # Verification (RequireBackfill, backfill_verify) rebuilds the run from it.
                    deferred.attach(name, recipe, using=alias)
        except BackfillError as exc:
            result_of = getattr(exc, "result", None)
            if isinstance(result_of, Result) and self.progress != "none":
                self._say(edge.summary_line(result_of))
            code, message = edge.failure(exc, alias, command=False)
            raise CommandError(f"{where}: {message}", returncode=code) from exc
        if self.progress != "none":
            done = result.message
            if result.status != "already completed":
                done = f"{done.rstrip('.')}: {edge.summary_line(result)}"
            total = edge.run_total(result)
            if total:
                done += "; " + total.replace("run total: scanned", "run total")
            self._say(done)

    def _recipe(self, app_label: str) -> dict[str, Any]:
        try:
            return self.recipe(app_label)
        except ValueError as exc:
            raise BadInput(str(exc)) from None

    def _deferral(self, connection: Any, model: type[models.Model]) -> int | None:
        """The table's estimated rows when the run is to be deferred, else None (run inline)."""
        estimate = deferred.estimated_rows(connection, model)
        if self.defer is True:
            return estimate
        threshold = self.defer_above
        if threshold is None:
            threshold = int(get_setting("DEFER_ABOVE_ROWS"))
        return estimate if estimate > threshold else None

    def _record(
        self, name: str, recipe: dict[str, Any], model: type[models.Model], alias: str, rows: int
    ) -> None:
        run, created = deferred.record(name, recipe, using=alias, estimated_rows=rows)
        if run.status == Run.Status.COMPLETED:
            message = f"Run {name!r} already completed; nothing to do."
        else:
            state = "Recorded" if created else f"Run is {run.status}; kept"
            message = (
                f"{state} run {name!r} as deferred (~{rows:,} rows in {model._meta.label} on "
                f"{database.describe(alias)}). Work it after deploy with: "
                f"{deferred.pending_command(name, alias)}"
            )
        if self.progress != "none":
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
                if operation is self:
                    return MigrationName(app_label, module_name.rpartition(".")[2]), index
        return None, 0

    def _run_name(
        self, app_label: str, migration: MigrationName | None, index: int, reverse: bool
    ) -> str:
        suffix = " reverse" if reverse else ""
        if self.options.get("name"):
            return f"{self.options['name']}{suffix}"
        if migration is not None:
            return f"migration {migration.app_label}.{migration.name} #{index + 1}{suffix}"
        _, args, kwargs = self.deconstruct()
        identity = json.dumps(
            [app_label, args, {k: _callable_name(v) for k, v in kwargs.items()}],
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha1(identity.encode()).hexdigest()[:8]
        return f"migration {app_label}.{self.model_name} {digest}{suffix}"

    def _model(self, app_label: str, state: ProjectState) -> type[models.Model]:
        label, _, name = self.model_name.rpartition(".")
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
        return recipes.apply_lookups(rows, self.filter, self.exclude)

    def _call(
        self,
        rows: QuerySet[Any],
        strategy: str,
        values: dict[str, Any] | None,
        transform: Transform | None,
        name: str,
        reporter: events.Reporter,
    ) -> Result:
        options: dict[str, Any] = {**self.options, "name": name, "reporter": reporter}
        return recipes.call(rows, strategy, values, transform, self.fields, options)

    # -- output --------------------------------------------------------------------------

    def _reporter(self) -> events.Reporter:
        if self.progress == "none":
            return events.ignore
        # migrate leaves "  Applying app.0003_x..." unterminated on stdout; start below it.
        self._say("")
        return edge.reporter_for(sys.stderr, self.progress)

    @staticmethod
    def _say(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


name_keywords(RunBackfill.__init__, MIGRATION_KEYWORDS)
