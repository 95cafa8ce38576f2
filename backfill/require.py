"""``RequireBackfill``: a migration operation that waits for a deferred run to be finished.

::

    from backfill.operations import RequireBackfill

    class Migration(migrations.Migration):
        dependencies = [("blog", "0006_backfill_blogpost_status")]
        operations = [
            RequireBackfill("blog: BlogPost.status"),
            migrations.AlterField("blogpost", "status", models.CharField(max_length=10, ...)),
        ]

It changes no schema and writes nothing. Applied, it refuses (``CommandError``, exit 1) until
the run is completed and its verification (``backfill.verify``) finds no row still needing the
change; the message names the run, its state and progress, and the command that finishes it.
The operations after it (the ``NOT NULL``, the constraint) then run on a table that holds.
Reversed, it does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.management.base import CommandError
from django.db import router
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState

from backfill.data_operation import DataOperation
from backfill.exceptions import BackfillIncomplete, BadInput
from backfill.models import Run


def check(name: str, using: str) -> str:
    """Raise BackfillIncomplete unless run ``name`` is complete and verifies; say why it holds.

    A run that was never recorded (its ``RunBackfill`` found the table empty) holds when
    verification of its operation finds no row. Raises BadInput for an unknown run or one
    that cannot be verified.
    """
    from backfill.deferred import find_recipe, pending_command
    from backfill.status import describe, percent
    from backfill.verify import verify

    run, _recipe = find_recipe(name, using)
    if run is not None and run.status != Run.Status.COMPLETED:
        info = describe(run, using)
        estimate = f"~{info.estimated_rows:,}" if info.estimated_rows is not None else "unknown"
        error = f" Last error: {info.last_error}" if info.last_error else ""
        raise BackfillIncomplete(
            f"Backfill run {name!r} is {info.state}, not completed: {percent(info.progress)} "
            f"({info.rows_scanned:,} of {estimate} rows scanned, {info.chunks_done:,} chunks)."
            f"{error} Finish it with: "
            f"{pending_command(name, using, restart=run.status == Run.Status.CANCELLED)} — "
            "then run migrate again."
        )
    found = verify(name, using=using)
    if not found.ok:
        shown = ", ".join(repr(pk) for pk in found.pks)
        more = ", …" if found.remaining > len(found.pks) else ""
        why = (
            "it completed, but rows written since it began still need the change"
            if run is not None
            else "no run was recorded (the table was empty when its migration ran), but rows "
            "written since then need the change"
        )
        raise BackfillIncomplete(
            f"Backfill run {name!r}: {why}: {found.remaining:,} rows of {found.model} "
            f"({found.condition}; pks {shown}{more}). Fill them with: "
            f"{pending_command(name, using, sweep=True)} — then run migrate again."
        )
    if run is None:
        return f"no run {name!r} was recorded and no row of {found.model} needs it"
    return f"run {name!r} is completed and verification finds no row left"


class RequireBackfill(DataOperation):
    """Refuse to go on until run ``name`` is completed and verified; a no-op when reversed.

    Applying it raises ``CommandError`` (``returncode`` 1 while the run is incomplete or rows
    still need it, 2 for an unknown run or one without a recipe).
    """

    reversible = True

    def __init__(
        self, name: str, *, hints: Mapping[str, Any] | None = None, elidable: bool = False
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("RequireBackfill needs the name of the run it waits for.")
        self.name = name
        self.hints = dict(hints or {})
        self.elidable = elidable  # type: ignore[misc]

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        if self.hints:
            kwargs["hints"] = self.hints
        if self.elidable:
            kwargs["elidable"] = True
        return (self.__class__.__qualname__, [self.name], kwargs)

    def describe(self) -> str:
        return f"Require backfill run {self.name!r} to be completed and verified"

    @property
    def migration_name_fragment(self) -> str:
        return "require_backfill"

    def forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, state: ProjectState
    ) -> None:
        alias = schema_editor.connection.alias
        if not router.allow_migrate(alias, app_label, **self.hints):
            return
        try:
            check(self.name, alias)
        except (BackfillIncomplete, BadInput) as exc:
            raise CommandError(f"RequireBackfill: {exc}", returncode=exc.exit_code) from exc

    def backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, state: ProjectState
    ) -> None:
        """Nothing to undo: the requirement only guarded the way forward."""
