"""What the three backfill commands share: options, reporters, rendering, exit codes."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.db import models
from django.db.models import Q

from backfill import edge, events, schema
from backfill import options as run_options
from backfill.database import check_alias
from backfill.exceptions import BadInput, Interrupted
from backfill.filters import parse_filters
from backfill.management.command import (
    EdgeCommand,
    add_database_argument,
    add_json_argument,
    add_progress_argument,
)
from backfill.result import Result
from backfill.values import parse_set


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
        add_database_argument(parser)
        run_options.add_arguments(parser)
        self.add_engine_arguments(parser)
        add_progress_argument(
            parser,
            "auto: a bar on a terminal, log lines otherwise; json: one JSON object per "
            "event and line (on stderr).",
            json_lines=True,
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="Serve Prometheus metrics on this port (needs prometheus_client).",
        )
        add_json_argument(parser, "Print the final summary as one JSON object on stdout.")

    def add_engine_arguments(self, parser: ArgumentParser) -> None:
        """How a run is handed to a task engine (see backfill.engines)."""
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
        edge.check_text_options(options)
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
        self.render(result, options)

    def common(self, options: dict[str, Any]) -> dict[str, Any]:
        """The API keywords of this call: the run options of the table, how it reports, and the
        stop flag that SIGINT/SIGTERM set from the command's first line (EdgeCommand)."""
        return {
            **run_options.from_command(options),
            "reporter": self.reporter(options),
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
        return edge.reporter_for(stream, options["progress"], int(options.get("verbosity", 1)))

    # -- output ------------------------------------------------------------------------

    def render(self, result: Result, options: dict[str, Any], *, exit_code: int = 0) -> None:
        if options["json"]:
            self.write_json({**result.as_dict(), "exit_code": exit_code})
            return
        if int(options.get("verbosity", 1)) == 0:
            return
        if result.plan is not None:
            for line, style in edge.plan_lines(result):
                self.stdout.write(self.style.WARNING(line) if style == "warning" else line)
            return
        if result.status in ("completed", "already completed"):
            self.stdout.write(self.style.SUCCESS(result.message))
        else:
            self.stdout.write(result.message)
        if result.status not in ("already completed", "queued"):
            self.stdout.write(edge.summary_line(result))
        total = edge.run_total(result)
        if total:
            self.stdout.write(total)
