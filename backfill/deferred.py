"""Deferred runs: recorded as pending by a migration, worked after deploy.

``RunBackfill(defer=True | "auto")`` validates its backfill against the migration's model,
stores it as data (``backfill.recipes``) in a ``pending`` run and returns in seconds.
``work_pending`` (the ``backfill_pending`` command) then works every deferred run that is not
completed, oldest first, through the same engine as ``backfill.update/iterate/cursor``: a run
stopped halfway resumes from its checkpoint the next time. ``sweep`` re-works only the rows that
verification still finds (rows written by the application after the run began).

A task engine can work pending runs too: it calls ``work_pending(names=[...])`` with the run
names it is handed; exactly-once rests on the ledger, not on the engine.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

from backfill import recipes
from backfill.database import check_alias, table_rows
from backfill.exceptions import BadInput
from backfill.models import Run, RunRecipe
from backfill.result import Result

MYSQL_ESTIMATE_SQL = (
    "SELECT TABLE_ROWS FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
)
SWEEP_SUFFIX = " sweep"


def estimated_rows(connection: BaseDatabaseWrapper, model: type[models.Model]) -> int:
    """The table's rows as the planner estimates them, without reading the table.

    PostgreSQL: ``pg_class.reltuples`` scaled to the table's size (``table_rows``); MySQL and
    MariaDB: ``information_schema.TABLES.TABLE_ROWS``. SQLite keeps no estimate, so it counts:
    an embedded database small enough to count.
    """
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute(MYSQL_ESTIMATE_SQL, [model._meta.db_table])
            row = cursor.fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
    return table_rows(connection, model, exact=connection.vendor != "postgresql")


def pending_command(
    name: str, using: str = DEFAULT_DB_ALIAS, *, sweep: bool = False, restart: bool = False
) -> str:
    """The command line that works (or sweeps, or restarts) run ``name``."""
    args = ["python", "manage.py", "backfill_pending", name]
    if sweep:
        args.append("--sweep")
    if restart:
        args.append("--restart")
    if using != DEFAULT_DB_ALIAS:
        args += ["--database", using]
    return shlex.join(args)


def recipe_of(name: str, using: str = DEFAULT_DB_ALIAS) -> RunRecipe | None:
    return RunRecipe.objects.using(using).filter(name=name).first()


def pending_runs(
    using: str = DEFAULT_DB_ALIAS, names: Iterable[str] = (), *, restart: bool = False
) -> list[Run]:
    """Deferred runs not completed or cancelled, oldest first; only ``names`` when given.

    With ``restart`` the named runs are returned whatever their status. Raises BadInput for a
    name that is not a deferred run, or ``restart`` without names.
    """
    check_alias(using)
    deferred_names = RunRecipe.objects.using(using).filter(deferred=True).values("name")
    runs = Run.objects.using(using).filter(name__in=deferred_names)
    wanted = list(names)
    if wanted:
        found = set(runs.filter(name__in=wanted).values_list("name", flat=True))
        for name in wanted:
            if name not in found:
                from backfill.status import get_run

                get_run(name, using)  # BadInput with the closest names when there is none
                raise BadInput(
                    f"Run {name!r} is not a deferred run (it was not recorded by "
                    "RunBackfill(defer=...)): resume it with the command that started it, "
                    "shown by: python manage.py backfill_runs NAME"
                )
        runs = runs.filter(name__in=wanted)
    elif restart:
        raise BadInput(
            "Restarting runs needs their names, e.g. backfill_pending 'blog: BlogPost.status' "
            "--restart: every other pending run resumes without it."
        )
    if restart:
        return list(runs.order_by("created_at", "id"))
    return list(
        runs.exclude(status__in=[Run.Status.COMPLETED, Run.Status.CANCELLED]).order_by(
            "created_at", "id"
        )
    )


def work_pending(
    names: Iterable[str] = (),
    *,
    using: str = DEFAULT_DB_ALIAS,
    max_runtime: float | None = None,
    restart: bool = False,
    on_result: Callable[[Result], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    **options: Any,
) -> list[Result]:
    """Work every pending deferred run (or those in ``names``), oldest first, one at a time.

    Each run is rebuilt from its recipe against the current model and worked to completion;
    ``max_runtime`` bounds the whole call; ``restart`` starts the named runs over (a cancelled
    or completed run too). ``options`` (``reporter``, ``stop``…) go to each
    run. Returns the results, also passed to ``on_result`` as each run ends. Stops at the first
    run that does not complete, raising what ``backfill.update/iterate/cursor`` raise
    (``Interrupted``, ``ChunkFailed``, ``RunBusy``, ``BadInput``); the next call resumes it.
    """
    started = clock()
    results: list[Result] = []
    if restart:
        options["restart"] = True
    for run in pending_runs(using, names, restart=restart):
        left = None if max_runtime is None else max_runtime - (clock() - started)
        extra = dict(options)
        if left is not None:
            extra["max_runtime"] = max(left, 1e-9)
        stored = recipe_of(run.name, using)
        assert stored is not None
        result = recipes.run(stored.recipe, name=run.name, using=using, **extra)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def find_recipe(name: str, using: str = DEFAULT_DB_ALIAS) -> tuple[Run | None, dict[str, Any]]:
    """Run ``name`` and its recipe; the recipe of the ``RunBackfill`` naming it when no run is.

    A ``RunBackfill(defer=...)`` records no run on an empty table (a fresh database): its
    operation, found in the migrations by the run name, still says what to verify. Raises
    BadInput when neither exists or the run has no recipe.
    """
    check_alias(using)
    run = Run.objects.using(using).filter(name=name).first()
    if run is not None:
        stored = recipe_of(name, using)
        if stored is None:
            raise BadInput(
                f"Run {name!r} has no recipe to rebuild it from: it was started by a command or "
                "by RunBackfill without defer=. Only runs of RunBackfill(defer=True or 'auto') "
                "can be verified and required."
            )
        return run, dict(stored.recipe)
    recipe = declared_recipe(name, using)
    if recipe is None:
        from backfill.status import get_run

        get_run(name, using)  # BadInput with the closest names
        raise AssertionError("unreachable")  # pragma: no cover
    return None, recipe


def declared_recipe(name: str, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any] | None:
    """The recipe of the deferrable ``RunBackfill`` whose run is called ``name``, if any."""
    from django.db.migrations.loader import MigrationLoader

    from backfill.operations import RunBackfill

    loader = MigrationLoader(connections[using], ignore_no_migrations=True, load=True)
    for (app_label, migration_name), migration in sorted(loader.disk_migrations.items()):
        for index, operation in enumerate(migration.operations):
            if not isinstance(operation, RunBackfill) or operation.defer is False:
                continue
            run_name = operation.options.get("name") or (
                f"migration {app_label}.{migration_name} #{index + 1}"
            )
            if run_name == name:
                return operation.recipe(app_label)
    return None


def sweep(name: str, *, using: str = DEFAULT_DB_ALIAS, **options: Any) -> Result:
    """Re-work only the rows that verification of run ``name`` still finds.

    Rows the application wrote after the run began (without the new value) are left behind by
    the run; a sweep runs the same backfill over the whole key range again as run
    ``"<name> sweep"``, restricted to those rows. Raises what ``backfill.update`` raises.
    """
    from backfill.verify import condition

    _run, recipe = find_recipe(name, using)
    where, _ = condition(recipe, recipes.model_of(recipe))
    return recipes.run(
        recipe,
        name=f"{name}{SWEEP_SUFFIX}"[:200],
        using=using,
        where=where,
        restart=True,
        **options,
    )
