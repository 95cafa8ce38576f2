"""What the three backfill commands share: options, reporters, rendering, exit codes."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, models
from django.db.models import Q

from backfill import events, schema
from backfill.database import check_alias
from backfill.exceptions import BadInput, Interrupted, TransformFailed, ValueRejected
from backfill.filters import parse_filters
from backfill.management.edge import EdgeCommand, check_text_options
from backfill.progress import reporter_for, summary_line
from backfill.result import Result
from backfill.values import parse_set


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadInput(
            f"--batch-size {text!r} is not a whole number. Pass e.g. --batch-size 2000."
        ) from None
    if value <= 0:
        raise BadInput(f"--batch-size must be positive, got {value}. Pass e.g. --batch-size 2000.")
    return value


def engine_options(options: dict[str, Any], where: Q) -> dict[str, Any]:
    """What ``--engine``/``--enqueue`` pass to the API (``backfill.engines.hand_off``)."""
    return {
        "engine": options.get("engine"),
        "filter": where,
        "joiners": options.get("joiners"),
        "budget": options.get("budget"),
        "queue": options.get("queue"),
        "wait": options.get("wait", False),
    }


class BackfillCommand(EdgeCommand):
    """Base of backfill_update / backfill_iterate / backfill_cursor."""

    strategy = ""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("model", help="app_label.ModelName, e.g. blog.BlogPost")
        self.add_strategy_arguments(parser)
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="LOOKUP=V",
            help="Only rows matching this Django lookup (repeatable).",
        )
        parser.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="LOOKUP=V",
            help="Skip rows matching this Django lookup (repeatable).",
        )
        parser.add_argument(
            "--batch-size",
            metavar="N",
            help="Rows per chunk (the starting size when --target-chunk-time adapts it).",
        )
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS, help='Database alias (default "default").'
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print the plan and a preview of the first chunk; write nothing.",
        )
        parser.add_argument(
            "--name", help="The run's identity (default: derived from the command)."
        )
        parser.add_argument(
            "--restart",
            action="store_true",
            help="Ignore this run's checkpoint and start from the beginning.",
        )
        parser.add_argument(
            "--max-runtime",
            type=float,
            metavar="SECONDS",
            help="Stop cleanly (checkpointed, exit 3) after this long.",
        )
        parser.add_argument("--sleep", type=float, metavar="S", help="Pause after each chunk.")
        parser.add_argument(
            "--target-chunk-time",
            type=float,
            metavar="S",
            help="Adapt the chunk size so each chunk takes about this long.",
        )
        parser.add_argument(
            "--max-rate",
            type=float,
            metavar="ROWS_PER_S",
            help="Never go faster than this many rows per second.",
        )
        parser.add_argument(
            "--lock-timeout",
            type=float,
            metavar="S",
            help="PostgreSQL lock_timeout per chunk (SET LOCAL).",
        )
        parser.add_argument(
            "--statement-timeout",
            type=float,
            metavar="S",
            help="PostgreSQL statement_timeout per chunk (SET LOCAL).",
        )
        parser.add_argument(
            "--max-replica-lag",
            type=float,
            metavar="S",
            help="Pause while a replica lags more than this (PostgreSQL).",
        )
        parser.add_argument(
            "--vacuum-every",
            type=float,
            metavar="SHARE",
            help="VACUUM the table after each such share of it (0.1 = 10%%).",
        )
        parser.add_argument(
            "--count",
            choices=["estimate", "exact"],
            default="estimate",
            help="Total rows from the planner's estimate (default) or COUNT(*).",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            metavar="N",
            help="N processes working this run in parallel (PostgreSQL).",
        )
        parser.add_argument(
            "--engine",
            metavar="NAME",
            help="Hand the run to a task engine (celery, tasks): enqueue joiners and exit 0.",
        )
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="Hand the run to the engine of BACKFILL['ENGINE'].",
        )
        parser.add_argument(
            "--joiners", type=int, metavar="N", help="With --engine: tasks working it at once."
        )
        parser.add_argument(
            "--budget", type=float, metavar="S", help="With --engine: seconds per joiner task."
        )
        parser.add_argument("--queue", help="With --engine: the queue of the joiner tasks.")
        parser.add_argument(
            "--wait",
            action="store_true",
            help="With --engine: follow the run until it ends; exit as a local run would.",
        )
        parser.add_argument(
            "--progress",
            choices=["auto", "bar", "log", "json", "none"],
            default="auto",
            help="auto: a bar on a terminal, log lines otherwise; json: one JSON object per "
            "event and line (on stderr).",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="Serve Prometheus metrics on this port (needs prometheus_client).",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print the final summary as one JSON object on stdout.",
        )

    def add_strategy_arguments(self, parser: ArgumentParser) -> None:
        raise NotImplementedError

    def add_value_arguments(self, parser: ArgumentParser, target: str) -> None:
        """``--set`` and ``--set-json``: what every strategy can assign to each ``target``."""
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="F=V",
            help=f"Set field F to V on every {target}, converted and validated by the field.",
        )
        parser.add_argument(
            "--set-json",
            action="append",
            default=[],
            metavar="F=JSON",
            help="Set field F to a JSON value: null, numbers, lists, objects.",
        )

    def set_values(self, model: type[models.Model], options: dict[str, Any]) -> dict[str, Any]:
        """The ``--set``/``--set-json`` values, refusing them together with ``--transform``."""
        if (options["set"] or options["set_json"]) and options.get("transform"):
            raise BadInput("Pass either --set/--set-json or --transform, not both.")
        return parse_set(model, options["set"], options["set_json"])

    def run_backfill(
        self, model: type[models.Model], queryset: Any, options: dict[str, Any], **common: Any
    ) -> Result:
        raise NotImplementedError

    # -- the shared flow ---------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        stop = getattr(self, "stop", None)
        if stop:
            raise CommandError(
                f"Stopped by {stop.reason} while Django was starting; nothing was started. "
                "Run the command again.",
                returncode=Interrupted.exit_code,
            )
        check_text_options(options)
        check_alias(options["database"])
        model = schema.resolve_model(options["model"])
        if options.get("only") is not None and options.get("defer") is not None:
            raise BadInput("--only and --defer cannot be used together; pass one of them.")
        where = parse_filters(
            model, options["filter"], options["exclude"], using=options["database"]
        )
        queryset = model._base_manager.using(options["database"]).filter(where)
        common = self.common(options)
        if not (options.get("engine") or options.get("enqueue")):
            for flag in ("wait", "joiners", "budget", "queue"):
                if options.get(flag) not in (None, False):
                    raise BadInput(
                        f"--{flag} is about a run handed to a task engine: pass --engine "
                        "celery (or --enqueue) too, or leave it out."
                    )
        if options.get("engine") or options.get("enqueue"):
            # Joiners rebuild the rows from the lookups, not from a queryset.
            queryset = model._base_manager.using(options["database"]).all()
            common.update(engine_options(options, where))
        try:
            result = self.run_backfill(model, queryset, options, **common)
        except Interrupted as exc:
            self.render(exc.result, options, exit_code=exc.exit_code)
            raise CommandError(str(exc), returncode=exc.exit_code) from exc
        except (TransformFailed, ValueRejected) as exc:
            raise CommandError(
                f"{exc}. Its chunk was rolled back; earlier chunks are committed. Fix the "
                "transform and re-run the same command to resume.",
                returncode=exc.exit_code,
            ) from exc
        self.render(result, options)

    def common(self, options: dict[str, Any]) -> dict[str, Any]:
        batch = options.get("batch_size")
        return {
            "batch_size": _positive_int(str(batch)) if batch is not None else None,
            "name": options.get("name"),
            "restart": options["restart"],
            "dry_run": options["dry_run"],
            "max_runtime": options.get("max_runtime"),
            "sleep": options.get("sleep"),
            "target_chunk_time": options.get("target_chunk_time"),
            "max_rate": options.get("max_rate"),
            "lock_timeout": options.get("lock_timeout"),
            "statement_timeout": options.get("statement_timeout"),
            "max_replica_lag": options.get("max_replica_lag"),
            "vacuum_every": options.get("vacuum_every"),
            "count": options["count"],
            "workers": options["workers"],
            "reporter": self.reporter(options),
            # Set by SIGINT/SIGTERM from the command's first line (EdgeCommand); the engine
            # checks it between chunks.
            "stop": getattr(self, "stop", None),
        }

    def reporter(self, options: dict[str, Any]) -> events.Reporter:
        """What renders the run's events (signals, metrics and spans are added by the API)."""
        if options.get("metrics_port") is not None:
            from backfill import metrics

            metrics.serve(options["metrics_port"])
        if options["dry_run"]:
            return events.ignore
        stream: Any = self.stderr._out
        return reporter_for(stream, options["progress"], int(options.get("verbosity", 1)))

    # -- output ------------------------------------------------------------------------

    def render(self, result: Result, options: dict[str, Any], *, exit_code: int = 0) -> None:
        if options["json"]:
            self.write_json({**result.as_dict(), "exit_code": exit_code})
            return
        if int(options.get("verbosity", 1)) == 0:
            return
        if result.plan is not None:
            self.render_plan(result)
            return
        if result.status in ("completed", "already completed"):
            self.stdout.write(self.style.SUCCESS(result.message))
        else:
            self.stdout.write(result.message)
        if result.status not in ("already completed", "queued"):
            self.stdout.write(summary_line(result))
        if result.total_chunks != result.chunks:
            self.stdout.write(
                f"run total: scanned {result.total_rows_scanned:,} rows, changed "
                f"{result.total_rows_changed:,}, {result.total_chunks:,} chunks"
            )

    def render_plan(self, result: Result) -> None:
        plan = result.plan
        assert plan is not None
        out = self.stdout.write
        out(f"Dry run of {result.name!r} on database {result.database!r}; nothing is written.")
        out(f"  table            {plan.table}")
        out(f"  primary keys     {plan.first_key!r} .. {plan.last_key!r}")
        out(
            f"  estimated rows   {plan.estimated_rows:,}"
            if plan.estimated_rows is not None
            else "  estimated rows   unknown"
        )
        out(f"  chunks           ~{plan.estimated_chunks:,} of {plan.batch_size:,} rows")
        out("First chunk:")
        for statement in plan.statements:
            out(f"  {statement}")
        if plan.explain:
            out("EXPLAIN of the first chunk's read:")
            for line in plan.explain:
                out(f"  {line}")
        for warning in plan.warnings:
            out(self.style.WARNING(f"warning: {warning}"))
        if not plan.preview:
            out("Preview: no row of the first chunk would change.")
        else:
            out(f"Preview of the first chunk ({len(plan.preview)} changed rows shown):")
            for row in plan.preview:
                changes = ", ".join(
                    f"{name}: {row['before'].get(name)!r} -> {value!r}"
                    for name, value in row["after"].items()
                )
                out(f"  pk={row['pk']!r}  {changes}")
