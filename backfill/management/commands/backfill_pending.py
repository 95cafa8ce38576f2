from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from backfill import deferred
from backfill.edge import reporter_for, summary_line
from backfill.exceptions import BackfillError, BadInput, Interrupted
from backfill.management.command import (
    EdgeCommand,
    add_database_argument,
    add_json_argument,
    add_progress_argument,
)
from backfill.result import Result


class Command(EdgeCommand):
    help = (
        "Work the backfill runs that migrations deferred (RunBackfill(defer=...)), oldest first, "
        "each to completion; re-run to resume. --sweep NAME re-works the rows verification "
        "still finds."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME", help="Only these runs.")
        parser.add_argument(
            "--sweep",
            action="store_true",
            help="Re-work only the rows of each NAME that backfill_verify still finds.",
        )
        parser.add_argument(
            "--restart",
            action="store_true",
            help="Start each NAME over from the beginning (also a cancelled or completed run).",
        )
        add_database_argument(parser)
        parser.add_argument(
            "--max-runtime",
            type=float,
            metavar="SECONDS",
            help="Stop cleanly (checkpointed, exit 3) after this long, over all runs.",
        )
        add_progress_argument(parser)
        add_json_argument(parser)
        parser.add_argument(
            "--engine",
            metavar="NAME",
            help="Hand the pending runs to this task engine (celery, tasks), not work them here.",
        )
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="Hand the pending runs to the engine of BACKFILL['ENGINE'].",
        )
        parser.add_argument("--joiners", type=int, metavar="N", help="Joiners per run.")
        parser.add_argument("--budget", type=float, metavar="S", help="Seconds per joiner.")
        parser.add_argument("--queue", help="The engine's queue for the joiner tasks.")

    def handle(self, *args: Any, **options: Any) -> None:
        done: list[Result] = []
        stream: Any = self.stderr._out
        common: dict[str, Any] = {
            "using": options["database"],
            "reporter": reporter_for(stream, options["progress"], int(options["verbosity"])),
        }
        if options["max_runtime"] is not None:
            common["max_runtime"] = options["max_runtime"]
        try:
            if options["engine"] or options["enqueue"]:
                done.extend(self.hand_to_engine(options))
            elif options["sweep"]:
                if not options["names"]:
                    raise BadInput(
                        "--sweep needs the NAME of the run to sweep, e.g. "
                        "backfill_pending --sweep 'blog: BlogPost.status'."
                    )
                for name in options["names"]:
                    done.append(deferred.sweep(name, **common))
            else:
                deferred.work_pending(
                    options["names"],
                    restart=options["restart"],
                    on_result=done.append,
                    **common,
                )
        except BackfillError as exc:
            result = exc.result if isinstance(exc, Interrupted) else None
            self.render(done, options, error=str(exc), stopped=result, code=exc.exit_code)
            raise CommandError(str(exc), returncode=exc.exit_code) from exc
        self.render(done, options)

    def hand_to_engine(self, options: dict[str, Any]) -> list[Result]:
        from backfill import engines

        if options["sweep"] or options["restart"]:
            raise BadInput(
                "--engine/--enqueue hands pending runs over as they are; drop --sweep/--restart."
            )
        handed = engines.hand_pending(
            options["names"],
            using=options["database"],
            engine=options["engine"],
            queue=options["queue"],
            joiners=options["joiners"],
            budget=options["budget"],
        )
        return handed

    def render(
        self,
        done: list[Result],
        options: dict[str, Any],
        *,
        error: str = "",
        stopped: Result | None = None,
        code: int = 0,
    ) -> None:
        runs = [*done, *([stopped] if stopped is not None else [])]
        if options["json"]:
            status = "completed" if not error else (stopped.status if stopped else "failed")
            message = error or f"{len(runs)} pending run(s) worked."
            self.write_json(
                {
                    "status": status,
                    "exit_code": code,
                    "message": message,
                    "runs": [r.as_dict() for r in runs],
                    "error": error,
                }
            )
            return
        if int(options["verbosity"]) == 0:
            return
        for result in runs:
            queued = result.status == "queued"  # handed to an engine: nothing worked here yet
            line = result.message if queued else f"{result.message} {summary_line(result)}"
            if result.completed:
                self.stdout.write(self.style.SUCCESS(line))
            else:
                self.stdout.write(line)
        if not runs and not error:
            self.stdout.write("No pending backfill runs.")
