"""The public Python API: ``backfill.update``, ``backfill.iterate``, ``backfill.cursor``.

Each takes a queryset (its filter limits the rows; ``.using()`` picks the database; ``only()``
/ ``defer()`` limit the columns read by ``iterate``), runs it as a resumable run and returns a
``Result``. Raises ``BadInput`` before writing anything, ``Interrupted`` when stopped early
(its ``result`` says where), ``ChunkFailed`` / ``TransformFailed`` when a chunk kept failing,
``RunBusy`` when another process holds the run, ``InsideTransaction`` inside ``atomic()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

from django.db.models import QuerySet

from backfill import events, schema
from backfill.conf import Options
from backfill.exceptions import BadInput
from backfill.options import API_KEYWORDS, RunOptions, check_keywords, run_options
from backfill.pacing import SYSTEM_CLOCK, Clock
from backfill.result import Result
from backfill.stopping import StopFlag


def _check_queryset(queryset: Any) -> QuerySet[Any]:
    if not isinstance(queryset, QuerySet):
        raise BadInput(
            f"Expected a QuerySet such as BlogPost.objects.all(), got {type(queryset).__name__}."
        )
    if queryset.query.is_sliced:
        raise BadInput(
            "Sliced querysets cannot be backfilled in chunks; filter instead of slicing."
        )
    if queryset.query.combinator:
        raise BadInput("union()/intersection() querysets cannot be backfilled; use one filter.")
    return queryset.order_by()


def _run(
    strategy: Any,
    options: RunOptions,
    reporter: events.Reporter | None,
    stop: StopFlag | None,
    clock: Clock | None,
) -> Result:
    from backfill.observers import attach
    from backfill.runner import Runner

    reporter = attach(reporter)
    opts = Options(**run_options(options))
    if opts.workers > 1 and not opts.dry_run:
        from django.db import connections

        from backfill.validation import check_options, check_workers
        from backfill.workers import run_parallel

        # Before any worker starts: the server must take them all.
        check_options(opts)
        check_workers(opts.workers, connections[strategy.queryset.db])

        return run_parallel(strategy, opts, reporter=reporter, stop=stop)
    clock = clock or SYSTEM_CLOCK
    return Runner(
        strategy, opts, reporter=reporter, stop=stop, clock=clock, sleep=clock.sleep
    ).run()


def update(
    queryset: QuerySet[Any],
    *,
    set: Mapping[str, Any],
    reporter: events.Reporter | None = None,
    stop: StopFlag | None = None,
    clock: Clock | None = None,
    **options: Unpack[RunOptions],
) -> Result:
    """Set columns with SQL only: one ``UPDATE`` per chunk, skipping rows already equal.

    ``set`` maps field names to values or Django expressions (``F("views") + 1``).
    """
    from backfill.strategies import UpdateStrategy
    from backfill.values import validate_mapping

    check_keywords("update", options, API_KEYWORDS)
    queryset = _check_queryset(queryset)
    if not set:
        raise BadInput("update() needs set={field: value}; nothing to set.")
    values = validate_mapping(queryset.model, set)
    if "engine" in options:
        from backfill.engines import hand_off

        return hand_off(queryset, "update", set=values, reporter=reporter, stop=stop, **options)
    return _run(UpdateStrategy(queryset, values), options, reporter, stop, clock)


def iterate(
    queryset: QuerySet[Any],
    *,
    transform: Callable[[Any], Any] | str | None = None,
    set: Mapping[str, Any] | None = None,
    save: bool = False,
    reporter: events.Reporter | None = None,
    stop: StopFlag | None = None,
    clock: Clock | None = None,
    **options: Unpack[RunOptions],
) -> Result:
    """Load model instances chunk by chunk, call ``transform(obj)``, write changed rows in bulk.

    ``transform`` mutates the instance (returning ``False`` skips it); it may be a callable, a
    dotted path or a registered name. ``save=True`` calls ``save(update_fields=…)`` per changed
    object so model signals fire.
    """
    from backfill.strategies import IterateStrategy
    from backfill.transforms import instance_setter, resolve
    from backfill.values import validate_mapping

    check_keywords("iterate", options, API_KEYWORDS)
    queryset = _check_queryset(queryset)
    if set and transform is not None:
        raise BadInput("Pass either set= (--set) or transform= (--transform), not both.")
    if set:
        chosen = instance_setter(validate_mapping(queryset.model, set), queryset.model)
    else:
        chosen = resolve(queryset.model, transform, rows=False)
    if "engine" in options:
        from backfill.engines import hand_off

        return hand_off(
            queryset,
            "iterate",
            set=set,
            transform=transform,
            save=save,
            reporter=reporter,
            stop=stop,
            **options,
        )
    return _run(IterateStrategy(queryset, chosen, save=save), options, reporter, stop, clock)


def cursor(
    queryset: QuerySet[Any],
    *,
    fields: Sequence[str] | None = None,
    transform: Callable[[dict[str, Any]], Any] | str | None = None,
    set: Mapping[str, Any] | None = None,
    reporter: events.Reporter | None = None,
    stop: StopFlag | None = None,
    clock: Clock | None = None,
    **options: Unpack[RunOptions],
) -> Result:
    """Stream raw rows (dicts of ``fields`` plus ``pk``) and write the changes ``transform``
    returns (a dict; ``None`` or ``{}`` = unchanged). No model instances are built.
    """
    from backfill.strategies import CursorStrategy
    from backfill.transforms import resolve, row_setter
    from backfill.values import validate_mapping

    check_keywords("cursor", options, API_KEYWORDS)
    queryset = _check_queryset(queryset)
    model = queryset.model
    if set and transform is not None:
        raise BadInput("Pass either set= (--set) or transform= (--transform), not both.")
    if set:
        values = validate_mapping(model, set)
        chosen = row_setter(values, model)
        default_fields: Sequence[str] = list(values)
    else:
        chosen = resolve(model, transform, rows=True)
        default_fields = [f.name for f in model._meta.concrete_fields if not f.primary_key]
    names = (
        schema.field_list(model, fields, purpose="fields") if fields is not None else default_fields
    )
    if set:
        names = [*names, *(n for n in default_fields if n not in names)]
    if "engine" in options:
        from backfill.engines import hand_off

        return hand_off(
            queryset,
            "cursor",
            set=set,
            transform=transform,
            fields=fields,
            reporter=reporter,
            stop=stop,
            **options,
        )
    strategy = CursorStrategy(queryset, names, chosen)
    return _run(strategy, options, reporter, stop, clock)
