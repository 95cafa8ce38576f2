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

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState
from django.db.models import Q

from backfill import recipes
from backfill.data_operation import DataOperation
from backfill.migration_run import MigrationRun, callable_name
from backfill.options import MIGRATION_KEYWORDS, MigrationOptions, check_keywords, name_keywords
from backfill.require import RequireBackfill

__all__ = ["RequireBackfill", "RunBackfill"]

logger = logging.getLogger("backfill")

STRATEGIES = ("update", "iterate", "cursor")
PROGRESS_MODES = ("auto", "bar", "log", "none")
DEFER_MODES = (False, True, "auto")
Transform = str | Callable[..., Any]
Lookups = Mapping[str, Any] | Q


class RunBackfill(DataOperation):
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
        chosen = _checked_definition(
            set,
            transform,
            strategy,
            fields,
            reverse_set,
            reverse_transform,
            progress,
            defer,
            defer_above,
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

    def describe(self) -> str:
        if self.set is not None:
            what = "set " + ", ".join(self.set)
        else:
            what = str(callable_name(self.transform))
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

    def forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, state: ProjectState
    ) -> None:
        MigrationRun(self, app_label, schema_editor, state).run(
            self.strategy, self.set, self.transform, reverse=False
        )

    def backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, state: ProjectState
    ) -> None:
        if not self.reversible:
            raise NotImplementedError(
                "You cannot reverse this operation: give RunBackfill a reverse_set or "
                "reverse_transform."
            )
        # Setting values needs no Python per row: reverse_set always runs as SQL UPDATEs.
        strategy = "update" if self.reverse_set is not None else self.strategy
        MigrationRun(self, app_label, schema_editor, state).run(
            strategy, self.reverse_set, self.reverse_transform, reverse=True
        )


def _checked_definition(
    set: Mapping[str, Any] | None,
    transform: Transform | None,
    strategy: str | None,
    fields: Sequence[str] | None,
    reverse_set: Mapping[str, Any] | None,
    reverse_transform: Transform | None,
    progress: str,
    defer: bool | str,
    defer_above: int | None,
) -> str:
    """The strategy a RunBackfill runs; ValueError for a malformed operation."""
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
    return chosen


name_keywords(RunBackfill.__init__, MIGRATION_KEYWORDS)
